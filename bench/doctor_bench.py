"""doctor benchmark: how fast a large log is diagnosed.

    python bench/doctor_bench.py [--mb 10] [--runs 3]

Builds a synthetic log of about --mb megabytes: clean training output (pip lines, NCCL INFO lines,
loss dictionaries, progress bars with ANSI colours), one decisive failure line near the top (the
cpu_adam compiler's real cause, a CUDA version mismatch) and a DeepSpeed traceback at the end. It
times ``diagnose`` (best of --runs, knowledge base already loaded) and prints MB, seconds, MB/s
and the diagnoses found. The issue asks for a 10 MB log in about a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.doctor import diagnose  # noqa: E402
from builder.knowledge import load_knowledge_base  # noqa: E402

# Clean line templates, each filled with two numbers.
CLEAN = [
    "{{'loss': 1.{0:04d}, 'learning_rate': 1.9e-05, 'epoch': 0.{1:02d}}}",
    "host:1234:1301 [0] NCCL INFO Channel {0:02d}/0 : 0[1000] -> 1[2000] via P2P/IPC ({1})",
    "\x1b[32m[2023-06-20 10:{0:02d}:01,221] [INFO] [logging.py:96:log_dist] [Rank 0] step={1}, skipped=0\x1b[0m",
    "  Downloading some_package-1.{0}.{1}-py3-none-any.whl (120 kB)",
    " 37%|███▋      | {0}/1164 [12:{1:02d}<20:31,  1.68s/it]",
    "Requirement already satisfied: filelock in /opt/venv/lib/python3.10/site-packages (from torch) (3.{0}.{1})",
]
DECISIVE = ("Exception: >- DeepSpeed Op Builder: Installed CUDA version 12.1 does not match the version torch "
            "was compiled with 11.8, unable to compile cuda/cpp extensions without a matching cuda version.")
TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/opt/venv/lib/python3.10/site-packages/deepspeed/ops/adam/cpu_adam.py", line 94, in __init__',
    "    self.ds_opt_adam = CPUAdamBuilder().load()",
    "RuntimeError: Error building extension 'cpu_adam'",
    "AttributeError: 'DeepSpeedCPUAdam' object has no attribute 'ds_opt_adam'",
]


def synthetic_log(megabytes: float) -> str:
    target = int(megabytes * 1_000_000)
    lines = [CLEAN[0].format(1, 1)] * 50 + [DECISIVE]
    size, i = sum(len(x) + 1 for x in lines), 0
    while size < target:
        line = CLEAN[i % len(CLEAN)].format(i % 60, i % 100)
        lines.append(line)
        size += len(line) + 1
        i += 1
    return "\n".join(lines + TRACEBACK) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load_knowledge_base()  # compile once, outside the timing
    text = synthetic_log(args.mb)
    megabytes = len(text.encode()) / 1_000_000
    best, found = float("inf"), []
    for _ in range(args.runs):
        start = time.perf_counter()
        found = diagnose(text)
        best = min(best, time.perf_counter() - start)
    print(f"log: {megabytes:.1f} MB, {text.count(chr(10))} lines")
    print(f"diagnose: {best:.3f} s (best of {args.runs}), {megabytes / best:.1f} MB/s")
    for d in found:
        print(f"  {d.issue.id}: confidence {d.confidence}, first line {d.first_line}")


if __name__ == "__main__":
    main()
