"""The training entries' GPU variants, run on a GPU host's own Python (no Docker, no network there).

The cuda images cannot be built where the GPUs are, so this runs what `stackbuild test --training`
runs in a cuda image - each current release's training entries (the profiles' ``training:``)
with their cuda target's flags (4-bit QLoRA through `trl sft --load_in_4bit`, bf16,
flash-attention 2 through transformers' ``attn_implementation``) - with the host's PyTorch, CUDA,
transformers and accelerate, and the packages the host lacks carried as wheels at the versions of
each release's cuda lock. The tiny model and data come from stackbuild's workbench
(templates/training/workbench.py) and what each run saved is judged by the same verdict as in the
images (builder.smoke.training.verdict).

Two steps, the first here and the second on the GPU host:

    python bench/training_gpu.py prepare DIR [--release STACK@RELEASE ...]
        download into DIR the wheels the GPU host lacks (trl, peft, bitsandbytes, datasets and
        what they need there, plus what this bench needs to read the profiles: pydantic), at the
        versions of the releases' cuda locks (default: every stack's current release); the
        bitsandbytes wheel is repacked with only its CPU and CUDA 13 libraries (the host's torch is
        a CUDA 13 build), which takes it from 59 MB to about 4 MB so that everything fits one
        transfer. Prints each wheel's size and the total.
    python3 bench/training_gpu.py run [--release STACK@RELEASE ...] [--steps N] [--markdown FILE]
        (after `pip install --no-index --no-deps --target SITE DIR/*.whl` and SITE on PYTHONPATH,
        SITE/bin on PATH) make the tiny model and data once, run every entry's cuda variant, each
        in its own process with a time limit, and print one table: entry x release, pass/fail/not
        run, seconds, what was saved. An entry that needs more GPUs than the host has runs with as
        many processes as there are GPUs (the table says so); one whose flags need a package the
        host cannot have (flash-attn: no wheel for the host's torch) is reported as not run, with why.
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import datetime
import glob
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _shared  # noqa: E402,F401  (the checkout on sys.path)

from builder.profile.load import available_stacks, load_stack  # noqa: E402
from builder.profile.spec import split_spec  # noqa: E402
from builder.safety.paths import templates_dir  # noqa: E402
from builder.smoke.training import MARKER, EntryRun, verdict  # noqa: E402

TARGET = "cuda"  # the variant this bench exists for; `run --target cpu` tries its code path on a CPU
# The packages a training entry imports that the GPU host does not have (its image has torch,
# transformers, accelerate, pyarrow, pandas, xxhash, fsspec, requests, ...: see the lease notes).
CARRIED = ("trl", "peft", "bitsandbytes", "datasets", "dill", "multiprocess")
# What this bench needs to load the profiles there, at the versions of stackbuild's own environment.
BENCH_NEEDS = ("pydantic", "pydantic-core", "typing-inspection", "annotated-types")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
HOST_PYTHON = "3.12"
# bitsandbytes' libraries the host's torch (a CUDA 13 build) can load; the others are dropped.
BNB_KEEP = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda13")
# Flags that need a package no wheel gives the host: (flag text, module, why not run).
NEEDS = (("flash_attention_2", "flash_attn", "flash-attn is not installed on this host: PyPI has only its sdist, "
          "and building its kernels for one arch takes about 10 minutes on 32 cores (bench/gpu_truth.py build "
          "--only flash-attn), more than one lease command allows beside the runs"),
         ("--use_deepspeed", "deepspeed", "deepspeed is not installed on this host (its ops are built from the sdist: "
          "bench/gpu_truth.py build --only deepspeed)"))
ENTRY_TIMEOUT_S = 300
IMAGE_FILES = "/opt/stackbuild/files/"  # where an image keeps its stack's shipped files (a ds_config, ...)


def on_host(argv: list[str], stack, work: str) -> list[str]:
    """``argv`` with the image's shipped-file paths (IMAGE_FILES) pointed at copies of the stack's files written
    under ``work``: the GPU host is not the image, and its /opt/stackbuild/files does not exist (the first
    H100 run of the zero3 entry stopped there: accelerate found no ds_config)."""
    folder = os.path.join(work, "files")
    os.makedirs(folder, exist_ok=True)
    for shipped in stack.files:
        with open(os.path.join(folder, shipped.name), "w", encoding="utf-8") as handle:
            handle.write(shipped.content)
    return [word.replace(IMAGE_FILES, folder + os.sep) for word in argv]


def _releases(names: list[str]) -> list[tuple[str, str]]:
    if names:
        return [(stack, release or load_stack(stack).default_release) for stack, release in map(split_spec, names)]
    return [(stack, load_stack(stack).default_release) for stack in available_stacks()]


def _lock_versions(stack: str, release: str) -> dict[str, str]:
    path = load_stack(stack).path.parent / "locks" / f"{stack}@{release}-{TARGET}.txt"
    versions = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            versions[name.lower().replace("_", "-")] = version
    return versions


def _own_version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


def _slim_bitsandbytes(path: str) -> str:
    """The wheel again without the libraries of other CUDA versions and ROCm/XPU (RECORD rewritten)."""
    slim = path + ".slim"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        record_name = next(n for n in source.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in source.infolist():
            name = info.filename
            if name == record_name:
                continue
            base = os.path.basename(name)
            if base.startswith("libbitsandbytes_") and not base.startswith(BNB_KEEP):
                continue
            data = source.read(name)
            target.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append((name, f"sha256={digest}", str(len(data))))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*rows, (record_name, "", "")])
        target.writestr(record_name, text.getvalue())
    os.replace(slim, path)
    return path


def prepare(folder: str, releases: list[str]) -> int:
    os.makedirs(folder, exist_ok=True)
    wanted: dict[str, str] = {}
    for stack, release in _releases(releases):
        versions = _lock_versions(stack, release)
        for name in CARRIED:
            if name in versions:
                if wanted.get(name, versions[name]) != versions[name]:
                    print(f"note: {name} {wanted[name]} and {versions[name]} in the releases' locks: carrying the newer")
                wanted[name] = max(wanted.get(name, versions[name]), versions[name],
                                   key=lambda v: tuple(int(p) if p.isdigit() else 0 for p in v.split(".")))
    for name in BENCH_NEEDS:
        wanted[name] = _own_version(name)
    for old in glob.glob(os.path.join(folder, "*.whl")):
        os.remove(old)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               HOST_PYTHON, "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", folder,
               *[f"{name}=={version}" for name, version in sorted(wanted.items())]]
    subprocess.run(command, check=True)
    for path in glob.glob(os.path.join(folder, "bitsandbytes-*.whl")):
        _slim_bitsandbytes(path)
    total = 0
    for path in sorted(glob.glob(os.path.join(folder, "*.whl"))):
        size = os.path.getsize(path)
        total += size
        print(f"{size / 2**20:8.2f} MiB  {os.path.basename(path)}")
    print(f"{total / 2**20:8.2f} MiB  in all ({len(glob.glob(os.path.join(folder, '*.whl')))} wheels)")
    return 0


def _host() -> dict[str, str]:
    import torch
    info = {"date": datetime.date.today().isoformat(), "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": str(torch.version.cuda), "gpus": str(torch.cuda.device_count()),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    for name in ("transformers", "accelerate", "trl", "peft", "bitsandbytes", "datasets", "flash_attn", "deepspeed"):
        spec = importlib.util.find_spec(name)
        if spec is None:
            info[name] = "-"
            continue
        from importlib.metadata import PackageNotFoundError, version
        try:
            info[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            info[name] = "?"
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip()
    except (OSError, subprocess.SubprocessError):
        info["driver"] = "?"
    return info


def _marked(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    return {}


def run(releases: list[str], steps: int, markdown: str | None, keep: str | None, target: str = TARGET) -> int:
    host = _host()
    gpus = int(host["gpus"])
    work = keep or tempfile.mkdtemp(prefix="stackbuild-training-")
    os.makedirs(work, exist_ok=True)
    workbench = os.path.join(work, "workbench.py")
    shutil.copy(templates_dir() / "training" / "workbench.py", workbench)
    made = subprocess.run([sys.executable, workbench, "prepare", work], capture_output=True, text=True)
    if made.returncode != 0:
        print(made.stdout[-2000:], made.stderr[-3000:], file=sys.stderr)
        return 1
    paths = _marked(made.stdout)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_DISABLED": "true", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    rows = []
    for stack, release in _releases(releases):
        profile = load_stack(stack)
        for entry in profile.release(release).training:
            if target not in entry.targets:
                continue
            flags = " ".join(entry.targets[target].flags)
            row = {"release": f"{stack}@{release}", "entry": entry.name, "flags": flags, "processes": str(entry.processes)}
            words = " ".join((*entry.command, flags))
            missing = [why for text, module, why in NEEDS if text in words and importlib.util.find_spec(module) is None]
            if missing:
                rows.append({**row, "status": "not run", "seconds": "-", "detail": missing[0]})
                print(f"NOT RUN {row['release']} {entry.name}: {missing[0]}", flush=True)
                continue
            if gpus < 1 and target == TARGET:
                rows.append({**row, "status": "not run", "seconds": "-", "detail": "no GPU visible to torch"})
                continue
            if entry.processes > gpus and target == TARGET:
                entry = fewer_ranks(entry, gpus)
                row["processes"] = f"{gpus} (of {row['processes']}: {gpus} GPU{'s' if gpus > 1 else ''} here)"
            output = os.path.join(work, "out", f"{stack}-{release}-{entry.name}")
            argv = on_host(entry.argv(target, {"model": paths["model"], "data": paths["data"], "output": output,
                                               "steps": str(steps)}), profile, work)
            print(f"== {row['release']} {entry.name}: {' '.join(argv)}", flush=True)
            started = time.monotonic()
            try:
                done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=ENTRY_TIMEOUT_S)
                code, log = done.returncode, done.stdout + done.stderr
            except subprocess.TimeoutExpired as exc:
                code, log = 124, f"{exc.stdout or ''}{exc.stderr or ''}\nError: timed out after {ENTRY_TIMEOUT_S} s"
            except OSError as exc:
                code, log = 127, f"Error: {exc}"
            seconds = time.monotonic() - started
            with open(output + ".log", "w", encoding="utf-8") as handle:
                handle.write(log)
            inspected = subprocess.run([sys.executable, workbench, "inspect", output, work], capture_output=True,
                                       text=True)
            saved = _marked(inspected.stdout) if inspected.returncode == 0 else {}
            status, detail = verdict(entry, target, EntryRun(code, log, saved, seconds))
            if saved.get("lora_dtypes"):
                detail += f"; LoRA dtypes {', '.join(saved['lora_dtypes'])}"
            rows.append({**row, "status": status, "seconds": f"{seconds:.1f}", "detail": detail})
            print(f"{status.upper()} {row['release']} {entry.name} {seconds:.1f} s: {detail}", flush=True)
            if status != "pass":
                print(log[-3000:], flush=True)
    table = _markdown(host, rows, steps, target)
    print(table)
    if markdown:
        with open(markdown, "w", encoding="utf-8") as handle:
            handle.write(table)
    return 0 if all(r["status"] != "fail" for r in rows) else 1


RANK = re.compile(r"(pp_rank_|rng_state_)(\d+)")  # a ZeRO shard's data-parallel rank, a rank's RNG state


def fewer_ranks(entry, processes: int):
    """The entry run with ``processes`` processes: evidence that names a rank past the last one (a file of rank
    1 when one GPU runs one process) names the last rank instead; the rest of the evidence stays."""
    def last(pattern: str) -> str:
        # one process: the Trainer saves its RNG state as rng_state.pth, without a rank
        return RANK.sub(lambda m: "rng_state" if processes == 1 and m[1] == "rng_state_"
                        else m[1] + str(min(int(m[2]), processes - 1)), pattern)

    def fewer(evidence):
        return dataclasses.replace(evidence, files=tuple(last(p) for p in evidence.files))

    targets = {name: dataclasses.replace(variant, evidence=fewer(variant.evidence))
               for name, variant in entry.targets.items()}
    return dataclasses.replace(entry, processes=processes, evidence=fewer(entry.evidence), targets=targets)


def _markdown(host: dict[str, str], rows: list[dict], steps: int, target: str) -> str:
    versions = ", ".join(f"{k} {host[k]}" for k in ("python", "torch", "cuda", "transformers", "accelerate", "trl",
                                                      "peft", "bitsandbytes", "datasets", "flash_attn", "deepspeed"))
    lines = [f"# Training entries' GPU variants ({host['date']})", "",
             f"`python3 bench/training_gpu.py run` on {host['gpus']} x {host['gpu']} (driver {host['driver']}); "
             f"{versions}. Each entry's {target} flags, {steps} steps, on stackbuild's tiny random LLaMA "
             "(templates/training/workbench.py); verdict as in the images (builder/smoke/training.py).", "",
             f"| release | entry | {target} flags | processes | result | seconds | what was saved / why not |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['release']} | {row['entry']} | `{row['flags']}` | {row['processes']} | {row['status']} | "
                     f"{row['seconds']} | {row['detail'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="download the wheels the GPU host lacks into DIR")
    prep.add_argument("folder")
    prep.add_argument("--release", action="append", default=[], help="STACK[@RELEASE] (default: every current one)")
    go = commands.add_parser("run", help="run the entries' cuda variants with this host's Python")
    go.add_argument("--release", action="append", default=[])
    go.add_argument("--steps", type=int, default=2)
    go.add_argument("--markdown")
    go.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    go.add_argument("--target", default=TARGET, help="the variant to run (cpu: the same code path without a GPU)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return prepare(args.folder, args.release)
    return run(args.release, args.steps, args.markdown, args.keep, args.target)


if __name__ == "__main__":
    sys.exit(main())
