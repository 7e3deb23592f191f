"""The torch layer installed by pip and by uv, timed on real builds.

    python bench/uv_vs_pip.py [STACK@RELEASE] [-t cpu] [--runs 2] [--ca /etc/ssl/certs/ca-certificates.crt]

Renders the stack's context with `stackbuild render`, then writes scratch Dockerfiles that stop
after the torch layer, whichever tool the templates render:

  pip      the torch step as `pip install --no-deps --require-hashes -r 2-torch.txt`, the
           bootstrap section without uv (pip compiles .pyc files by default);
  uv       uv in the bootstrap section (the lock's pin, or UV_VERSION below: from PyPI, pinned and
           hash-checked, installed by pip), then `uv pip install --no-cache --no-deps
           --require-hashes -r 2-torch.txt` into the same venv (uv writes no .pyc files by default);
  uv-pyc   the same with `--compile-bytecode`, comparable to pip, and what the templates render.

Every variant is built `docker buildx build --no-cache --progress=plain --network host`, the
variants interleaved run by run; the seconds of each step come from BuildKit's `#N DONE 12.3s`
lines. The TLS proxy's CA reaches the network steps as a build secret (never a layer). Images are
tagged uvbench/* and removed after each build, with this benchmark's records in BuildKit's
cache (UVBENCH=1 marks its steps; about 8 GB a build); each build holds /tmp/stackbuild-build.lock, as
every stackbuild build on this host does. Needs docker buildx, and the project installed in this
interpreter (`stackbuild` renders; its engine prunes the cache records). The load average is
printed before and after each build: the figures only mean something on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _shared import build_lock  # the checkout on sys.path; the host's build lock
from builder.engine.classic import DockerEngine  # noqa: E402

# uv for a lock without it, pinned and hash-checked like the rest of the bootstrap section
# (https://pypi.org/pypi/uv/0.13.9/json: the manylinux x86_64 wheel and the sdist).
UV_VERSION = "0.13.9"
UV_HASHES = (
    "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    "dd6f4f93ddf8a668c73f0945f3638444b2140a4e15a3912067493fc6335543e4",
)

SITE_BEGIN = ". /opt/stackbuild/site.sh && site_begin"
# The CA as a secret mount, exported for pip, uv and anything else in the step.
# UVBENCH=1 marks this benchmark's steps in BuildKit's cache, which it prunes after each build.
TRUST = (
    "--mount=type=secret,id=ca "
    "export UVBENCH=1 PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca REQUESTS_CA_BUNDLE=/run/secrets/ca"
)
MARK = "export UVBENCH=1 "
VARIANTS = ("pip", "uv", "uv-pyc")
DONE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s$")
HEADER = re.compile(r"^#(\d+) (?:\[[^\]]*\] )?([A-Za-z].*)$")


def stackbuild() -> str:
    beside = Path(sys.executable).with_name("stackbuild")
    found = str(beside) if beside.exists() else shutil.which("stackbuild")
    if not found:
        raise SystemExit("stackbuild is not installed (pip install -e .)")
    return found


def cut_after_torch(dockerfile: str) -> str:
    """The rendered Dockerfile up to and including the torch step, the site script's calls replaced."""
    blocks = dockerfile.split("\n\n")
    kept: list[str] = []
    for block in blocks:
        kept.append(block)
        if "lock/2-torch.txt" in block and "RUN " in block:
            break
    else:
        raise SystemExit("the rendered Dockerfile has no torch step that installs lock/2-torch.txt")
    text = "\n\n".join(kept) + "\n"
    text = text.replace("RUN " + SITE_BEGIN, "RUN " + TRUST).replace(" \\\n && site_end", "")
    if "site_begin" in text or "site_end" in text:
        raise SystemExit("a site.sh call is left in the scratch Dockerfile: its form changed")
    return text


TORCH_INSTALL = re.compile(r"\n && (?:(?!\n && ).)*? -r (/\S+/lock/2-torch\.txt)", re.DOTALL)
UV_BLOCK = re.compile(r"^uv==\S+(?: \\\n    --hash=\S+)*\n?", re.MULTILINE)


def bootstraps(text: str) -> dict[str, str]:
    """The bootstrap section without uv (for pip) and with it (for uv: the lock's, else the pin above)."""
    without = UV_BLOCK.sub("", text)
    if without != text:
        return {"pip": without, "uv": text}
    pin = f"uv=={UV_VERSION}" + "".join(f" \\\n    --hash=sha256:{h}" for h in UV_HASHES) + "\n"
    return {"pip": text, "uv": text.rstrip("\n") + "\n" + pin}


def variant(text: str, name: str) -> str:
    """The scratch Dockerfile of one variant: its own bootstrap file, and its own torch install line."""
    venv = re.search(r"python3 -m venv (\S+)", text)
    if not venv or text.count("lock/1-bootstrap.txt") != 3 or not TORCH_INSTALL.search(text):
        raise SystemExit("the rendered bootstrap or torch step changed its form: update bench/uv_vs_pip.py")
    tool = "pip" if name == "pip" else "uv"
    text = text.replace("lock/1-bootstrap.txt", f"lock/1-bootstrap-{tool}.txt")
    if tool == "pip":
        command = "pip install --no-deps --require-hashes"
    else:
        flags = " --compile-bytecode" if name == "uv-pyc" else ""
        command = f"uv pip install --python {venv[1]}/bin/python --no-cache{flags} --no-deps --require-hashes"
    return TORCH_INSTALL.sub(lambda m: f"\n && {command} -r {m[1]}", text, count=1)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def prune_own_cache() -> None:
    """Drop this benchmark's records from BuildKit's cache (gigabytes a build), never anyone else's:
    a --no-cache build still leaves each step's result there, and removing the image does not free it."""
    left = DockerEngine.connect().prune_build_cache(lambda record: MARK in (record.get("Description") or ""))
    if left:
        print(f"note: {len(left)} of this benchmark's build cache records could not be pruned", file=sys.stderr)


def build(context: Path, dockerfile: str, tag: str, ca: str, log: Path, lock: Path) -> dict:
    (context / "Dockerfile.bench").write_text(dockerfile)
    with build_lock(lock, say_waiting=False):  # no other stackbuild build on this host meanwhile
        return timed_build(context, tag, ca, log)


def timed_build(context: Path, tag: str, ca: str, log: Path) -> dict:
    load_before = load()
    cmd = ["docker", "buildx", "build", "--network", "host", "--no-cache", "--progress=plain",
           "--secret", f"id=ca,src={ca}", "-f", str(context / "Dockerfile.bench"), "-t", tag, str(context)]
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - started
    lines = log.read_text().splitlines()
    if proc.returncode:
        prune_own_cache()
        print("\n".join(lines[-30:]), file=sys.stderr)
        raise SystemExit(f"{tag}: build failed (log: {log})")
    names: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for line in lines:
        if m := DONE.match(line):
            seconds[m[1]] = float(m[2])
        elif m := HEADER.match(line):
            names.setdefault(m[1], m[2])
    def step(pred) -> float:
        found = [seconds[n] for n, name in names.items() if pred(name) and n in seconds]
        if len(found) != 1:
            raise SystemExit(f"{tag}: expected one matching step, found {len(found)} (log: {log})")
        return found[0]
    size = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", tag],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["docker", "rmi", tag], capture_output=True, check=True)
    prune_own_cache()
    return {
        "torch": step(lambda n: n.startswith("RUN") and "2-torch.txt" in n),
        "bootstrap": step(lambda n: n.startswith("RUN") and "1-bootstrap.txt" in n),
        "export": seconds.get(next((n for n, name in names.items() if name.startswith("exporting")), ""), 0.0),
        "wall": wall,
        "size_gb": int(size) / 1e9,
        "load_before": load_before,
        "load_after": load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?", default="qlora@2026.11")
    parser.add_argument("-t", "--target", default="cpu")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--ca", default="/etc/ssl/certs/ca-certificates.crt")
    parser.add_argument("--only", action="append", choices=VARIANTS, help="variants to build (default: all)")
    parser.add_argument("--lock", type=Path, default=Path("/tmp/stackbuild-build.lock"),
                        help="held during each build, as every stackbuild build on this host does")
    parser.add_argument("--logs", type=Path, help="keep the build logs here")
    args = parser.parse_args()
    variants = args.only or list(VARIANTS)

    with tempfile.TemporaryDirectory(prefix="uvbench-") as tmp:
        context = Path(tmp) / "context"
        subprocess.run([stackbuild(), "render", args.spec, "-t", args.target, "--context", str(context)],
                       check=True, stdout=subprocess.DEVNULL)
        for tool, text in bootstraps((context / "lock" / "1-bootstrap.txt").read_text()).items():
            (context / "lock" / f"1-bootstrap-{tool}.txt").write_text(text)
        base = cut_after_torch((context / "Dockerfile").read_text())
        files = {name: variant(base, name) for name in VARIANTS}
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)

        results: dict[str, list[dict]] = {v: [] for v in variants}
        print(f"{args.spec} -t {args.target}, uv {UV_VERSION}, {os.cpu_count()} cores")
        print(f"{'variant':<8} {'run':>3} {'torch s':>8} {'boot s':>7} {'export s':>8} {'build s':>8}"
              f" {'image GB':>8}  load before / after (1, 5, 15 min)")
        for run in range(1, args.runs + 1):
            for variant in variants:
                tag = f"uvbench/{variant}:{run}"
                r = build(context, files[variant], tag, args.ca, logs / f"{variant}-{run}.log", args.lock)
                results[variant].append(r)
                print(f"{variant:<8} {run:>3} {r['torch']:>8.1f} {r['bootstrap']:>7.1f} {r['export']:>8.1f}"
                      f" {r['wall']:>8.1f} {r['size_gb']:>8.2f}  {r['load_before']} / {r['load_after']}",
                      flush=True)

    print("\nmedians")
    median = {v: {k: statistics.median(r[k] for r in rs) for k in ("torch", "wall")} for v, rs in results.items()}
    for v, m in median.items():
        print(f"{v:<8} torch {m['torch']:7.1f} s   build {m['wall']:7.1f} s")
    if "pip" in median:
        for v in (v for v in median if v != "pip"):
            print(f"pip / {v:<7} torch step x{median['pip']['torch'] / median[v]['torch']:.2f}"
                  f"   whole build x{median['pip']['wall'] / median[v]['wall']:.2f}")


if __name__ == "__main__":
    main()
