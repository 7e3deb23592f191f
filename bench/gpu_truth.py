"""GPU truth: every smoke check's GPU branch, run on a real GPU host without Docker or network.

The cuda images cannot be built where the GPUs are (no Docker, no network there), so this runs
what the images would run - the rendered smoke checks and their manifests - against the host's
own PyTorch and CUDA, with the few packages the host lacks handed over as wheels and the compiled
packages (DeepSpeed's ops, flash-attn) built there from their sdists with the profile's flags.

Three steps, the first here and the other two on the GPU host:

    python bench/gpu_truth.py prepare DIR [--release 2026.11]
        render every cuda target's build context (and each option's) into DIR/contexts/, and
        download into DIR the lock's wheels of the packages the host lacks (--wheel NAME ...),
        the compiled packages' sdists and Debian's libaio (DeepSpeed's async_io needs its
        headers); wheels over 16 MiB go to DIR/wheels-big/ so each part fits one transfer.
    python3 bench/gpu_truth.py build DIR [--arch 9.0] [--jobs N] [--only deepspeed|flash-attn] [--as-image]
        install the wheels into DIR/site, then build each compiled package from its sdist with
        the build environment of the profile (DS_BUILD_*, FLASH_ATTN_*; one arch), recording
        the seconds in DIR/builds.json. `--parallel` also times DeepSpeed's ops compiled with
        `setup.py build_ext -j N` (a figure only: that build is not safe to install, see below).
        `--as-image` builds DeepSpeed instead exactly as the image does (the context's pip line and
        its build_ext hook: ops side by side, each in its own build folder), timed and installed.
    python3 bench/gpu_truth.py run DIR [--markdown FILE] [--launcher-gpus 2]
        run every check of every context and print one table, check x target: pass/warn/fail/skip
        and seconds. Version checks (pins, lock, python-version, pip-check) are skipped: the
        host's packages are not the image's. DeepSpeed's ZeRO-3 offload check also runs across
        GPUs through DeepSpeed's launcher.

A lease plan that fits 30 minutes of a 32-core, 2-GPU machine is bench/gpu_truth_lease.sh:
contexts/, wheels/, sdist/ and debs/ (about 15 MiB) travel with the first command, which copies
DIR to /tmp/gt and starts both builds in the background at once (`setsid nohup`); bitsandbytes
(wheels-big/, 56 MiB) travels with the second, which runs the alpaca-lora and qlora contexts;
the third runs the deepspeed and flash-attn contexts as each build finishes. Measured 2026-11-30:
flash-attn for sm_90 633 s (MAX_JOBS=28), DeepSpeed's op set one op after another 1051 s
(MAX_JOBS=8, beside flash-attn), 22.7 minutes of device time in all. DeepSpeed's ops built with
`build_ext -j 32` took 289 s alone, but that build is not safe to install (see build_deepspeed).

The run and build steps use only the standard library and the host's Python. `run` writes the
checks' shipped files to /opt/stackbuild/files (where the images have them), so run it as root.
DIR is worked in: where the host's copy of the checkout is replaced between commands, copy DIR
outside it first (e.g. `cp -r .gpu /tmp/gt`) so builds survive from one command to the next.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Checks that compare the image's versions with its pins or its lock: the host's packages are not
# the image's, so on the host they would only measure the host.
VERSION_CHECKS = {
    "python-version": "version check: the host's Python is not the image's",
    "pins": "version check: the host's packages are not the image's pins",
    "pip-check": "version check: the host's environment is not the image's",
    "lock": "version check: the host's packages are not the image's lock",
    "ninja": "version check: the host's ninja is not the image's pin",
}
# Packages a GPU host with PyTorch commonly lacks, with what they need (names as in the locks).
DEFAULT_WHEELS = ["bitsandbytes", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "hjson",
                  "datasets", "dill", "multiprocess"]
BIG = 16 * 1024 * 1024
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_34_x86_64"]
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


# ----------------------------------------------------------------------------------------------
# prepare (here: network, stackbuild installed)
# ----------------------------------------------------------------------------------------------

def cuda_targets(release: str | None, options: bool) -> list[tuple[str, str, list[str]]]:
    """(stack, release, options) for every stack's cuda target, then (with ``options``) each cuda option."""
    def cli(*args):
        return json.loads(subprocess.run([sys.executable, "-m", "builder", *args, "--json"], check=True,
                                         capture_output=True, text=True, cwd=ROOT).stdout)
    out = []
    for stack in cli("list"):
        chosen = release or stack["default_release"]
        entry = next((r for r in stack["releases"] if r["name"] == chosen), None)
        if entry is None or "cuda" not in entry["targets"]:
            continue
        out.append((stack["name"], chosen, []))
        if not options:
            continue
        shown = cli("show", f"{stack['name']}@{chosen}")["releases"][0]
        for option in shown.get("options") or []:
            if "cuda" in option["targets"]:
                out.append((stack["name"], chosen, [option["name"]]))
    return out


def lock_versions(context_dir: str) -> dict[str, str]:
    versions = {}
    for path in glob.glob(os.path.join(context_dir, "lock", "*.txt")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", line)
                if match:
                    versions[match.group(1).lower().replace("_", "-")] = match.group(2)
    return versions


def sdist_url(name: str, version: str) -> str:
    index = f"https://pypi.org/simple/{name}/"
    request = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    stem = "[-_.]".join(re.escape(part) for part in re.split(r"[-_.]+", name))
    for item in files:
        if re.fullmatch(rf"(?i){stem}-{re.escape(version)}\.tar\.gz", item["filename"]):
            return item["url"]
    raise SystemExit(f"no sdist of {name}=={version} on PyPI")


def prepare(args) -> int:
    out = os.path.abspath(args.dir)
    contexts = os.path.join(out, "contexts")
    os.makedirs(contexts, exist_ok=True)
    versions: dict[str, str] = {}
    compiled: dict[str, str] = {}
    for stack, release, options in cuda_targets(args.release, args.options):
        name = f"{stack}@{release}-cuda" + "".join(f"+{o}" for o in options)
        folder = os.path.join(contexts, name)
        shutil.rmtree(folder, ignore_errors=True)
        command = [sys.executable, "-m", "builder", "render", f"{stack}@{release}", "-t", "cuda", "--context", folder]
        for option in options:
            command += ["--with", option]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        versions.update(lock_versions(folder))
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
            for step in json.load(handle).get("compiled", []):
                compiled[step["package"]] = step["version"]
        print(f"context  {name}")
    wheels = os.path.join(out, "wheels")
    big = os.path.join(out, "wheels-big")
    os.makedirs(wheels, exist_ok=True)
    os.makedirs(big, exist_ok=True)
    wanted = [f"{n}=={versions[n]}" for n in args.wheel if n in versions]
    missing = [n for n in args.wheel if n not in versions]
    if missing:
        print(f"not in any lock (skipped): {', '.join(missing)}")
    if wanted:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--python-version", args.python, "--implementation", "cp", "-d", wheels]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        subprocess.run(command + wanted, check=True)
    for path in glob.glob(os.path.join(wheels, "*.whl")):
        if os.path.getsize(path) > BIG:
            shutil.move(path, os.path.join(big, os.path.basename(path)))
    sdists = os.path.join(out, "sdist")
    os.makedirs(sdists, exist_ok=True)
    for package, version in sorted(compiled.items()):
        url = sdist_url(package, version)
        target = os.path.join(sdists, url.split("/")[-1].split("#")[0])
        if not os.path.exists(target):
            urllib.request.urlretrieve(url, target)
        print(f"sdist    {os.path.basename(target)}")
    if args.toolkit:
        # the CUDA compiler a slim cuda base installs (the cuda accelerator entry's wheel_toolkit in
        # builder/profile/accelerators.py) at the toolkit release torch depends on, and the runtime wheel
        # whose headers and libcudart it links
        toolkit = os.path.join(out, "toolkit")
        os.makedirs(toolkit, exist_ok=True)
        from builder.profile.accelerators import ACCELERATORS
        wheel_toolkit = ACCELERATORS["cuda"].wheel_toolkit
        command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version",
                   args.python, "--implementation", "cp", "-d", toolkit]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        extras = ",".join((*wheel_toolkit.extras, "cudart"))
        subprocess.run(command + [f"{wheel_toolkit.package}[{extras}]=={args.toolkit}"], check=True)
        for path in sorted(glob.glob(os.path.join(toolkit, "*.whl"))):
            print(f"{os.path.relpath(path, out):<72} {os.path.getsize(path) / 2**20:7.1f} MiB")
        if args.toolkit_tar:
            # the wheels' nvidia/ tree, xz-packed into one file that fits one transfer with the rest
            # (nvidia-nvvm's wheel alone is 59 MiB); libnvvm.so (the libNVVM API, which nvcc does not
            # use) is left out
            import zipfile
            tar = os.path.join(out, f"toolkit-{args.toolkit}.tar.xz")
            with tarfile.open(tar, "w:xz", preset=7) as packed:
                for wheel in sorted(glob.glob(os.path.join(toolkit, "*.whl"))):
                    with zipfile.ZipFile(wheel) as archive:
                        for info in archive.infolist():
                            if not info.filename.startswith("nvidia/") or info.is_dir() or \
                                    info.filename.endswith("/libnvvm.so.4") or "/.metadata/" in info.filename:
                                continue
                            entry = tarfile.TarInfo(info.filename)
                            entry.size, entry.mode = info.file_size, (info.external_attr >> 16) or 0o644
                            with archive.open(info) as member:
                                packed.addfile(entry, member)
            shutil.rmtree(toolkit)
            print(f"{os.path.relpath(tar, out):<72} {os.path.getsize(tar) / 2**20:7.1f} MiB")
    debs = os.path.join(out, "debs")
    os.makedirs(debs, exist_ok=True)
    subprocess.run(["apt-get", "download", "libaio1", "libaio-dev"], check=True, cwd=debs,
                   stdout=subprocess.DEVNULL)
    for folder in (wheels, big, debs):
        for path in sorted(glob.glob(os.path.join(folder, "*"))):
            print(f"{os.path.relpath(path, out):<72} {os.path.getsize(path) / 2**20:7.1f} MiB")
    return 0


# ----------------------------------------------------------------------------------------------
# build (there: GPU host, no network)
# ----------------------------------------------------------------------------------------------

def host_env(out: str) -> dict[str, str]:
    """The environment every step there runs with: carried packages first, libaio, no NVLink multicast."""
    env = dict(os.environ, **SAFE_ENV)
    site = os.path.join(out, "site")
    env["PYTHONPATH"] = site + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    aio = os.path.join(out, "aio")
    for var, sub in (("CPATH", "usr/include"), ("LIBRARY_PATH", "usr/lib/x86_64-linux-gnu"),
                     ("LD_LIBRARY_PATH", "usr/lib/x86_64-linux-gnu")):
        path = os.path.join(aio, sub)
        env[var] = path + (os.pathsep + env[var] if env.get(var) else "")
    env["PATH"] = os.path.join(site, "bin") + os.pathsep + env.get("PATH", "")
    home = toolkit_home(out)
    if home:  # the image's toolchain (build --toolkit): its CUDA_HOME, its nvcc first on PATH
        env["CUDA_HOME"] = home
        env["PATH"] = os.path.join(home, "bin") + os.pathsep + env["PATH"]
    return env


def toolkit_home(out: str) -> str | None:
    """CUDA_HOME where install_toolkit put the toolkit wheels (None: the host's own nvcc is used)."""
    homes = glob.glob(os.path.join(out, "toolkit-site", "nvidia", "cu*", "bin", "nvcc"))
    if len(homes) > 1:
        raise SystemExit(f"the toolkit wheels hold {len(homes)} nvcc, not one: {homes}")
    return os.path.dirname(os.path.dirname(homes[0])) if homes else None


def extract(archive: tarfile.TarFile, folder: str) -> None:
    """Unpack with the "data" filter where Python has it (3.11.4, 3.12); before (Debian bookworm's 3.11.2),
    without: the archives are prepare's own downloads."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(folder, filter="data")
    else:
        archive.extractall(folder)


def install_toolkit(out: str, source: str) -> list[str]:
    """Put the CUDA toolkit wheels into DIR/toolkit-site and lay them out as the image does
    (templates/partials/toolkit.j2: lib64 -> lib, an unversioned name beside each versioned library);
    the folder becomes CUDA_HOME (host_env). ``source`` is a folder of the wheels, or a .tar.xz of
    their nvidia/ tree (the same files, packed to fit one transfer: prepare --toolkit-tar)."""
    site = os.path.join(out, "toolkit-site")
    if source.endswith(".tar.xz"):
        os.makedirs(site, exist_ok=True)
        with tarfile.open(source) as archive:
            extract(archive, site)
        what = [os.path.basename(source)]
    else:
        what = sorted(glob.glob(os.path.join(source, "*.whl")))
        if not what:
            raise SystemExit(f"no toolkit wheels in {source}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--target", site, *what], check=True)
    home = toolkit_home(out)
    if home is None:
        raise SystemExit(f"the toolkit holds no nvcc: {what}")
    if not os.path.lexists(os.path.join(home, "lib64")):
        os.symlink("lib", os.path.join(home, "lib64"))
    for lib in glob.glob(os.path.join(home, "lib", "lib*.so.*")):
        name = os.path.join(home, "lib", os.path.basename(lib).split(".so.", 1)[0] + ".so")
        if not os.path.lexists(name):
            os.symlink(os.path.basename(lib), name)
    return [os.path.basename(w) for w in what]


def install(out: str, paths: list[str]) -> None:
    if paths:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--target", os.path.join(out, "site"), *paths], check=True)


def compiled_context(out: str, package: str) -> tuple[str, dict[str, str]]:
    """The first context (folder) whose image compiles ``package``, and that step's build environment."""
    for manifest in sorted(glob.glob(os.path.join(out, "contexts", "*", "manifest.json"))):
        with open(manifest, encoding="utf-8") as handle:
            for step in json.load(handle).get("compiled", []):
                if step["package"] == package:
                    return os.path.dirname(manifest), dict(step.get("env") or {})
    raise SystemExit(f"no context compiles {package}")


def compiled_env(out: str, package: str) -> dict[str, str]:
    return compiled_context(out, package)[1]


def image_jobs(context: str) -> int:
    """The MAX_JOBS the image's compiled step computes here: MemAvailable / its GiB per job, at most nproc."""
    with open(os.path.join(context, "Dockerfile"), encoding="utf-8") as handle:
        per = re.search(r"MAX_JOBS=\"\$\(awk -v per=(\d+) ", handle.read())
    if per is None:
        raise SystemExit(f"{context}/Dockerfile sizes no MAX_JOBS")
    with open("/proc/meminfo", encoding="utf-8") as handle:
        kib = int(next(line.split()[1] for line in handle if line.startswith("MemAvailable:")))
    return max(1, min(os.cpu_count() or 1, kib // 1048576 // int(per.group(1))))


def unpack(out: str, package: str, folder: str = "src") -> str:
    stem = package.replace("-", "_")
    archives = glob.glob(os.path.join(out, "sdist", f"{stem}-*.tar.gz")) + \
        glob.glob(os.path.join(out, "sdist", f"{package}-*.tar.gz"))
    if not archives:
        raise SystemExit(f"no sdist of {package} in {out}/sdist")
    work = os.path.join(out, folder)
    os.makedirs(work, exist_ok=True)
    with tarfile.open(archives[0]) as archive:
        top = archive.getnames()[0].split("/")[0]
        shutil.rmtree(os.path.join(work, top), ignore_errors=True)
        extract(archive, work)
    return os.path.join(work, top)


def timed_build(label: str, command: list[str], cwd: str, env: dict[str, str], log: str) -> float:
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.run(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        with open(log, encoding="utf-8", errors="replace") as handle:
            tail = handle.read().splitlines()[-30:]
        print("\n".join(tail))
        raise SystemExit(f"{label} failed after {seconds:.0f} s (exit {proc.returncode}); log {log}")
    print(f"{label:<58} {seconds:8.1f} s", flush=True)
    return seconds


def record(out: str, key: str, value) -> None:
    path = os.path.join(out, "builds.json")
    data = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    data[key] = value
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)


def restrict_ops(context: str, flags: dict[str, str], ops: list[str], arch: str) -> dict[str, str]:
    """The step's flags with only ``ops`` built (DS_BUILD_OPS=0, DS_BUILD_<OP>=1) for ``arch``, written
    back into the context's manifest so its checks expect exactly those: a shorter build of the same
    toolchain."""
    kept = {k: v for k, v in flags.items() if not k.startswith("DS_BUILD_")}
    kept.update({"DS_BUILD_OPS": "0", **{f"DS_BUILD_{op.upper()}": "1" for op in ops}})
    path = os.path.join(context, "manifest.json")
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    for step in manifest["compiled"]:
        if step["package"] == "deepspeed":
            step["env"] = dict(kept, TORCH_CUDA_ARCH_LIST=arch)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
    return kept


def build_deepspeed_as_image(out: str, args, env: dict[str, str]) -> None:
    """DeepSpeed exactly as the image builds it, timed and installed into DIR/site.

    The context's own pip line: the sdist from the context's lock, hash-checked (found in DIR/sdist,
    no index), --no-build-isolation --no-deps, with the step's DS_* flags (one arch), and the
    context's build_ext/sitecustomize.py on PYTHONPATH with STACKBUILD_BUILD_JOBS: its ops build
    side by side, each in its own build folder, ninja in each. The budget is the image's MAX_JOBS
    (MemAvailable / the step's GiB per job, at most the cores) unless --jobs says otherwise.
    """
    context, flags = compiled_context(out, "deepspeed")
    if args.ops:
        flags = restrict_ops(context, flags, args.ops, args.arch)
    hook = os.path.join(context, "build_ext")
    if not os.path.exists(os.path.join(hook, "sitecustomize.py")):
        raise SystemExit(f"{context} builds DeepSpeed without the build_ext hook: prepare DIR again")
    jobs = args.jobs or image_jobs(context)
    build = dict(env, **dict(flags, TORCH_CUDA_ARCH_LIST=args.arch, STACKBUILD_BUILD_JOBS=str(jobs)))
    build["PYTHONPATH"] = hook + os.pathsep + env["PYTHONPATH"]
    build.pop("MAX_JOBS", None)
    log = os.path.join(out, "deepspeed-image.log")
    seconds = timed_build(f"deepspeed as the image builds it, {jobs} jobs",
                          [sys.executable, "-m", "pip", "install", "-v", "--no-cache-dir", "--no-index",
                           "--find-links", os.path.join(out, "sdist"), "--no-build-isolation", "--no-deps",
                           "--require-hashes", "--upgrade", "--target", os.path.join(out, "site"),
                           "-r", os.path.join(context, "lock", "3-deepspeed.txt")], out, build, log)
    with open(log, encoding="utf-8", errors="replace") as handle:
        split = re.findall(r"stackbuild: \d+ extension\(s\), \d+ at once, MAX_JOBS=\d+ each", handle.read())
    if not split:
        raise SystemExit(f"the build_ext hook did not run (no 'stackbuild:' line in {log})")
    print(f"  {split[-1]}")
    ops = sorted(os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(out, "site", "deepspeed", "ops",
                                                                                  "**", "*.so"), recursive=True))
    record(out, "deepspeed-image", {"flags": flags, "arch": args.arch, "jobs": jobs, "cores": os.cpu_count(),
                                    "seconds": round(seconds, 1), "split": split[-1], "ops": ops})


def build_deepspeed(out: str, args, env: dict[str, str]) -> None:
    """DeepSpeed as the profile built it before parallel_extensions (ninja inside each op, ops one after another).

    With --parallel, a second build from a fresh copy is timed with `build_ext -j N` and not
    installed: torch's ninja backend writes one build.ninja into the build folder every extension
    shares (parallel extensions overwrite each other's, so that build runs without ninja), and
    transformer_op and stochastic_transformer_op compile the same sources to the same object paths,
    so in parallel one can link the other's objects (seen on 2026-11-30: stochastic_transformer_op
    without its PyInit). Its figure is a lower bound, not a build to ship.
    """
    if args.as_image:
        build_deepspeed_as_image(out, args, env)
        return
    args.jobs = args.jobs or os.cpu_count()
    src = unpack(out, "deepspeed")
    flags = compiled_env(out, "deepspeed")
    build = dict(env, **dict(flags, TORCH_CUDA_ARCH_LIST=args.arch, DS_ACCELERATOR="cuda", MAX_JOBS=str(args.jobs)))
    entry = {"flags": flags, "arch": args.arch, "jobs": args.jobs, "cores": os.cpu_count()}
    entry["serial_s"] = round(timed_build(f"deepspeed ops one after another, ninja, MAX_JOBS={args.jobs}",
                                          [sys.executable, "setup.py", "build_ext", "bdist_wheel"], src, build,
                                          os.path.join(out, "deepspeed-serial.log")), 1)
    wheel = glob.glob(os.path.join(src, "dist", "*.whl"))
    entry["wheel_mib"] = round(os.path.getsize(wheel[0]) / 2**20, 1)
    install(out, wheel)
    if args.parallel:
        copy = unpack(out, "deepspeed", "src-parallel")
        parallel = {k: v for k, v in build.items() if k != "DS_ENABLE_NINJA"}
        entry["parallel_s"] = round(timed_build(f"deepspeed ops, build_ext -j {args.jobs}, no ninja (not installed)",
                                                [sys.executable, "setup.py", "build_ext", "-j", str(args.jobs),
                                                 "bdist_wheel"], copy, parallel,
                                                os.path.join(out, "deepspeed-parallel.log")), 1)
    record(out, "deepspeed", entry)


def build_flash_attn(out: str, args, env: dict[str, str]) -> None:
    args.jobs = args.jobs or os.cpu_count()
    src = unpack(out, "flash-attn")
    flags = compiled_env(out, "flash-attn")
    arch = args.arch.replace(".", "")
    build = dict(env, **dict(flags, FLASH_ATTN_CUDA_ARCHS=arch, MAX_JOBS=str(args.jobs),
                             FLASH_ATTENTION_FORCE_BUILD="TRUE"))  # no network there: no prebuilt-wheel lookup
    seconds = timed_build(f"flash-attn, sm_{arch}, MAX_JOBS={args.jobs}",
                          [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                           "-w", os.path.join(src, "dist"), "-v", "."], src, build,
                          os.path.join(out, "flash-attn.log"))
    wheel = glob.glob(os.path.join(src, "dist", "*.whl"))
    install(out, wheel)
    record(out, "flash-attn", {"flags": flags, "archs": arch, "jobs": args.jobs, "cores": os.cpu_count(),
                               "seconds": round(seconds, 1), "wheel_mib": round(os.path.getsize(wheel[0]) / 2**20, 1)})


def build(args) -> int:
    out = os.path.abspath(args.dir)
    if not args.no_wheels:
        install(out, sorted(glob.glob(os.path.join(out, "wheels", "*.whl")) +
                            glob.glob(os.path.join(out, "wheels-big", "*.whl"))))
    for deb in glob.glob(os.path.join(out, "debs", "*.deb")):
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(out, "aio")], check=True)
    aio = os.path.join(out, "aio", "usr", "lib", "x86_64-linux-gnu")
    if os.path.exists(os.path.join(aio, "libaio.so.1")) and not os.path.exists(os.path.join(aio, "libaio.so")):
        os.symlink("libaio.so.1", os.path.join(aio, "libaio.so"))
    if args.toolkit:
        wheels = install_toolkit(out, args.toolkit)
    env = host_env(out)
    if args.toolkit:
        seen = subprocess.run([sys.executable, "-c", "import torch.utils.cpp_extension as c; print(c.CUDA_HOME)"],
                              capture_output=True, text=True, env=env).stdout.strip().splitlines()
        version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, env=env).stdout.strip()
        record(out, "toolkit", {"from": wheels, "cuda_home": env["CUDA_HOME"],
                                "torch_cuda_home": seen[-1] if seen else None,
                                "nvcc": version.splitlines()[-1] if version else None})
        print(f"toolkit  CUDA_HOME={env['CUDA_HOME']} (torch's cpp_extension: {seen[-1] if seen else '?'}); "
              f"{version.splitlines()[-1] if version else 'no nvcc'}")
    if args.only in (None, "deepspeed"):
        build_deepspeed(out, args, env)
    if args.only in (None, "flash-attn"):
        build_flash_attn(out, args, env)
    return 0


# ----------------------------------------------------------------------------------------------
# run (there)
# ----------------------------------------------------------------------------------------------

def results_of(stdout: str) -> list[dict]:
    found = []
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("status") in ("pass", "warn", "fail", "skip"):
            found.append(item)
    return found


def install_files(context_dir: str) -> None:
    """The image's /opt/stackbuild/files (shipped configs), as the checks expect them."""
    target = "/opt/stackbuild/files"
    shutil.rmtree(target, ignore_errors=True)
    source = os.path.join(context_dir, "files")
    if os.path.isdir(source):
        shutil.copytree(source, target)
    else:
        os.makedirs(target)


def launcher_zero3(context_dir: str, manifest: dict, gpus: int, env: dict[str, str]) -> dict:
    """DeepSpeed's ZeRO-3 offload check across GPUs, started by DeepSpeed's own launcher."""
    check = next(c for c in manifest["checks"] if c["name"] == "deepspeed-zero3-offload")
    payload = json.dumps({"check": check, "manifest": manifest})
    started = time.monotonic()
    # --no_local_rank: the launcher would otherwise put --local_rank=N before the check's own argument
    proc = subprocess.run([sys.executable, "-m", "deepspeed.launcher.runner", "--no_local_rank", "--num_gpus", str(gpus),
                           os.path.join(context_dir, "smoke", "checks", check["file"]), payload],
                          capture_output=True, text=True, env=env, timeout=600,
                          cwd=os.path.join(context_dir, "smoke", "checks"))
    seconds = round(time.monotonic() - started, 2)
    found = results_of(proc.stdout)
    name = f"deepspeed-zero3-offload x{gpus} (launcher)"
    if len(found) != gpus:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        return {"check": name, "status": "fail", "seconds": seconds,
                "detail": f"{len(found)} of {gpus} ranks reported (exit {proc.returncode}): {tail}"}
    worst = max(found, key=lambda r: ("skip", "pass", "warn", "fail").index(r["status"]))
    return {"check": name, "status": worst["status"], "seconds": seconds,
            "detail": f"{gpus} ranks: " + worst["detail"]}


def host_facts(env: dict[str, str]) -> list[str]:
    def out(command):
        try:
            return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "unavailable"
    torch = out([sys.executable, "-c", "import torch; print(torch.__version__, torch.version.cuda, "
                                       "torch.cuda.device_count())"]).split()
    gpus = out(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    nvcc = re.search(r"release ([\d.]+)", out(["nvcc", "--version"]))
    return [f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"GPUs: {'; '.join(gpus.splitlines())}",
            f"torch {torch[0] if torch else '?'}, CUDA {torch[1] if len(torch) > 1 else '?'}, "
            f"nvcc {nvcc.group(1) if nvcc else '?'}, Python {sys.version.split()[0]}, {os.cpu_count()} cores"]


def run(args) -> int:
    out = os.path.abspath(args.dir)
    env = host_env(out)
    contexts = sorted(glob.glob(os.path.join(out, "contexts", "*")))
    if args.context:
        contexts = [c for c in contexts if any(os.path.basename(c).startswith(name) for name in args.context)]
    saved = os.path.join(out, "results.json")  # earlier runs' columns stay in the table
    table: dict[str, dict[str, dict]] = {}
    if os.path.exists(saved):
        with open(saved, encoding="utf-8") as handle:
            table = json.load(handle)
    for context_dir in contexts:
        target = os.path.basename(context_dir)
        with open(os.path.join(context_dir, "manifest.json"), encoding="utf-8") as handle:
            manifest = json.load(handle)
        install_files(context_dir)
        column = table.setdefault(target, {})  # a context run in parts keeps every part
        runnable = [c["name"] for c in manifest["checks"] if c["name"] not in VERSION_CHECKS]
        if args.only:
            runnable = [name for name in runnable if name in args.only]
        for check in manifest["checks"]:
            if check["name"] in VERSION_CHECKS:
                column[check["name"]] = {"status": "skip", "detail": VERSION_CHECKS[check["name"]], "seconds": 0}
        if runnable:
            proc = subprocess.run([sys.executable, os.path.join(context_dir, "smoke", "run.py"), "--only", *runnable],
                                  capture_output=True, text=True, env=env)
            for result in results_of(proc.stdout):
                column[result["check"]] = result
                print(f"{target:<40} {result['check']:<28} {result['status']:<5} {result.get('seconds', 0):7.1f} s",
                      flush=True)
        if args.launcher_gpus > 1 and any(c["name"] == "deepspeed-zero3-offload" for c in manifest["checks"]):
            result = launcher_zero3(context_dir, manifest, args.launcher_gpus, env)
            column[result["check"]] = result
            print(f"{target:<40} {result['check']:<28} {result['status']:<5} {result['seconds']:7.1f} s", flush=True)
        with open(saved, "w", encoding="utf-8") as handle:
            json.dump(table, handle, indent=1)
    text = markdown(table, host_facts(env), out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 1 if any(r["status"] == "fail" for column in table.values() for r in column.values()) else 0


def markdown(table: dict[str, dict[str, dict]], facts: list[str], out: str) -> str:
    targets = list(table)
    checks: list[str] = []
    for column in table.values():
        checks += [name for name in column if name not in checks]
    short = {t: t.split("@")[0] + ("+" + t.split("+", 1)[1] if "+" in t else "") for t in targets}
    lines = ["# GPU truth: every smoke check's GPU branch on a real GPU", ""] + [f"- {fact}" for fact in facts]
    builds = os.path.join(out, "builds.json")
    if os.path.exists(builds):
        with open(builds, encoding="utf-8") as handle:
            for package, entry in json.load(handle).items():
                figures = ", ".join(f"{k} {entry[k]}" for k in ("parallel_s", "serial_s", "seconds", "jobs", "cores",
                                                                 "wheel_mib") if k in entry)
                lines.append(f"- built here: {package} ({figures}; archs {entry.get('arch') or entry.get('archs')})")
    lines += ["", "| check | " + " | ".join(short[t] for t in targets) + " |",
              "|---|" + "---|" * len(targets)]
    for name in checks:
        cells = []
        for t in targets:
            r = table[t].get(name)
            cells.append("" if r is None else f"{r['status']} {r.get('seconds', 0):.1f}s" if r["status"] != "skip"
                         else "skip")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Details", ""]
    for t in targets:
        for name, r in table[t].items():
            lines.append(f"- **{short[t]} / {name}**: {r['status']}: {r.get('detail', '')}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here: render the cuda contexts and download what the GPU host lacks")
    p.add_argument("dir")
    p.add_argument("--release", default=None, help="release of every stack (default: each stack's default)")
    p.add_argument("--options", action="store_true", help="also each option's cuda target (--with)")
    p.add_argument("--python", default="3.12", help="the GPU host's Python version (for wheels)")
    p.add_argument("--wheel", nargs="*", default=DEFAULT_WHEELS, help="packages the GPU host lacks")
    p.add_argument("--toolkit", default=None, help="also download the CUDA compiler wheels a slim cuda base installs, "
                   "cuda-toolkit[...]==VERSION (torch 2.11.0 depends on 13.0.2), into DIR/toolkit/")
    p.add_argument("--toolkit-tar", action="store_true", help="pack those wheels' files into DIR/toolkit-VERSION.tar.xz "
                   "(one transfer) instead of keeping the wheels")
    b = sub.add_parser("build", help="there: install the wheels, build the compiled packages")
    b.add_argument("dir")
    b.add_argument("--arch", default="9.0", help="one GPU arch, as TORCH_CUDA_ARCH_LIST writes it")
    b.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: the cores; with "
                   "--as-image, the image's MAX_JOBS rule)")
    b.add_argument("--only", choices=("deepspeed", "flash-attn"), default=None)
    b.add_argument("--no-wheels", action="store_true", help="the wheels are installed already")
    b.add_argument("--toolkit", default=None, help="a folder of CUDA toolkit wheels or their .tar.xz (prepare "
                   "--toolkit [--toolkit-tar]): build with "
                   "them as CUDA_HOME, laid out as a slim cuda image lays them out, instead of the host's nvcc")
    b.add_argument("--ops", nargs="*", default=None, help="with --as-image: build only these DeepSpeed ops "
                   "(e.g. fused_adam cpu_adam), the manifest's checks then expect those")
    b.add_argument("--parallel", action="store_true", help="also time DeepSpeed's ops built with build_ext -j")
    b.add_argument("--as-image", action="store_true", help="build DeepSpeed as the image does (its pip line, the "
                   "context's build_ext hook: ops side by side), instead of one op after another")
    r = sub.add_parser("run", help="there: run every check of every context, print the table")
    r.add_argument("dir")
    r.add_argument("--only", nargs="*", default=None, help="run only these checks")
    r.add_argument("--context", nargs="*", default=None, help="run only the contexts whose names start so")
    r.add_argument("--markdown", default=None, help="also write the table to this file")
    r.add_argument("--launcher-gpus", type=int, default=2, help="GPUs for ZeRO-3 through DeepSpeed's launcher")
    args = parser.parse_args()
    return {"prepare": prepare, "build": build, "run": run}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
