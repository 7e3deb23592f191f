"""doctor benchmark: how fast a large log is diagnosed.

    python bench/doctor_bench.py [--mb 10] [--runs 3] [--stream-mb 200] [--hostile-mb 20] [--killed-lines 10000000]

Builds a synthetic log of about --mb megabytes: clean training output (pip lines, NCCL INFO lines,
loss dictionaries, progress bars with ANSI colours), one decisive failure line near the top (the
cpu_adam compiler's real cause, a CUDA version mismatch) and a DeepSpeed traceback at the end. It
times ``diagnose`` (best of --runs, knowledge base already loaded) and prints MB, seconds, MB/s
and the diagnoses found. The issue asks for a 10 MB log in about a second.

Then, in a fresh process each (so the figure is the process's own peak), it runs `doctor` on a
--stream-mb log file and prints the peak RSS (issue 13: under 200 MB for a 200 MB log), and on
--hostile-mb of pathological lines (long lines of repeated pattern text, CR-overwritten lines,
blank lines, escape sequences) and prints the time (issue 13: under 10 s for 20 MB), and on a log of
--killed-lines lines that each match a pattern (``Killed``) and prints the peak RSS (issue 26: it
levelled at about 430 MB; memory must not grow with the number of matching lines).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _shared  # noqa: F401 - puts the checkout on sys.path

from builder.doctor.diagnose import diagnose  # noqa: E402
from builder.profile.knowledge import load_knowledge_base  # noqa: E402

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


def hostile_lines(megabytes: float) -> str:
    """Lines made to be slow: pattern text repeated along very long lines, and worse."""
    target = int(megabytes * 1_000_000)
    kinds = [
        "Loading checkpoint shards: " * 4000,                       # a literal with `.*Killed$` after it
        "Killed " * 15000,                                           # a literal that never ends the line
        "RuntimeError: CUDA error: " * 3000 + "\r" * 10 + "x",     # CR-separated segments
        "\x1b]0;" + "a" * 50000,                                     # an unterminated OSC
        "\n" * 100000,                                               # blank lines
        ("No module named 'torch' " * 2000),                         # a generic line without its context
    ]
    parts, size, i = [], 0, 0
    while size < target:
        part = kinds[i % len(kinds)] + "\n"
        parts.append(part)
        size += len(part)
        i += 1
    return "".join(parts)


def _child(log: Path) -> None:
    from builder.doctor.diagnose import diagnose_file
    load_knowledge_base()
    start = time.perf_counter()
    found = diagnose_file(log)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{seconds:.2f} {rss:.0f} {len(found)}")


def _measure(log: Path) -> tuple[float, float, int]:
    done = subprocess.run([sys.executable, __file__, "--child", str(log)], capture_output=True, text=True, check=True)
    seconds, rss, count = done.stdout.split()
    return float(seconds), float(rss), int(count)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stream-mb", type=float, default=200.0, help="size of the streamed log (0: skip)")
    parser.add_argument("--hostile-mb", type=float, default=20.0, help="size of the pathological log (0: skip)")
    parser.add_argument("--killed-lines", type=int, default=10_000_000,
                        help="lines of a log where every line matches (0: skip)")
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
    with tempfile.TemporaryDirectory() as folder:
        if args.stream_mb:
            log = Path(folder) / "big.log"
            with log.open("w", encoding="utf-8") as handle:
                block = synthetic_log(10)
                for _ in range(max(1, int(args.stream_mb // 10))):
                    handle.write(block)
            seconds, rss, count = _measure(log)
            size = log.stat().st_size / 1_000_000
            log.unlink()
            print(f"stream: {size:.0f} MB log file, peak RSS {rss:.0f} MB (goal < 200), {seconds:.1f} s, "
                  f"{count} diagnoses")
        if args.hostile_mb:
            log = Path(folder) / "hostile.log"
            log.write_text(hostile_lines(args.hostile_mb), encoding="utf-8")
            seconds, rss, count = _measure(log)
            size = log.stat().st_size / 1_000_000
            print(f"pathological lines: {size:.0f} MB, {seconds:.1f} s (goal < 10), peak RSS {rss:.0f} MB, "
                  f"{count} diagnoses")
        if args.killed_lines:
            log = Path(folder) / "killed.log"
            with log.open("w", encoding="utf-8") as handle:
                for start in range(0, args.killed_lines, 1_000_000):
                    handle.write("Killed\n" * min(1_000_000, args.killed_lines - start))
            seconds, rss, count = _measure(log)
            size = log.stat().st_size / 1_000_000
            log.unlink()
            print(f"matching lines: {args.killed_lines:,} lines of Killed ({size:.0f} MB), peak RSS {rss:.0f} MB, "
                  f"{seconds:.1f} s, {count} diagnoses")


if __name__ == "__main__":
    main()
