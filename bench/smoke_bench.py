"""Smoke benchmark: how long `stackbuild test` takes on every built cpu image, check by check.

    python bench/smoke_bench.py [STACK@RELEASE ...] [--image REF ...] [--runs 1] [--goal 60]

For each stack x release with a cpu target (or those named), runs `stackbuild test STACK@RELEASE
--target cpu --json` as a user would - the image of this checkout's plan, which must be built here
(`stackbuild build STACK@RELEASE --target cpu`); --image REF tests an image by reference instead (an
older build, say, to compare). Prints each check's status and seconds (the runner's own figure:
from the check's start to its end), then the wall time of the whole command (container start and
removal included) against the goal, and the load average before and after, since the host may be
shared. Images that are not built are listed as such. Exit status 0 when every image tested passed
within the goal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _shared import ROOT  # the checkout on sys.path

from builder.profile.load import available_stacks, load_stack  # noqa: E402


def cpu_releases() -> list[str]:
    specs = []
    for name in available_stacks():
        for release, spec in load_stack(name).releases.items():
            if "cpu" in spec.targets:
                specs.append(f"{name}@{release}")
    return specs


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_test(target: str, by_image: bool) -> tuple[float, int, dict | None, str]:
    command = [sys.executable, "-m", "builder", "test", target, "--json"] + ([] if by_image else ["--target", "cpu"])
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    return wall, proc.returncode, report, proc.stderr.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="STACK@RELEASE (default: every release with a cpu target)")
    parser.add_argument("--image", action="append", default=[], help="an image reference to test instead")
    parser.add_argument("--runs", type=int, default=1, help="runs per image (the best is compared with the goal)")
    parser.add_argument("--goal", type=float, default=60.0, help="seconds per image (default 60)")
    args = parser.parse_args()
    targets = [(ref, True) for ref in args.image] or [(spec, False) for spec in (args.specs or cpu_releases())]
    print(f"host: {os.cpu_count()} CPUs, load {load()}")
    summary, ok = [], True
    for target, by_image in targets:
        best = None
        for run in range(args.runs):
            wall, code, report, stderr = run_test(target, by_image)
            if report is None:
                reason = stderr.splitlines()[-1] if stderr else f"exit {code}"
                print(f"\n{target}: not tested: {reason}")
                break
            print(f"\n{target} ({report['image']}), run {run + 1}: {wall:.1f} s, exit {code}, load {load()}")
            for result in report["results"]:
                print(f"  {result['check']:<26} {result['status']:<5} {result['seconds']:7.2f} s")
            checks = sum(r["seconds"] for r in report["results"])
            print(f"  {'(sum of the checks)':<32} {checks:7.2f} s")
            if best is None or wall < best[0]:
                best = (wall, report["ok"])
        if best is None:
            summary.append((target, None, False))
            continue
        within = best[0] <= args.goal
        ok = ok and within and best[1]
        summary.append((target, best[0], best[1]))
    print(f"\n{'image':<36} {'seconds':>8}  goal {args.goal:.0f} s")
    for target, wall, passed in summary:
        if wall is None:
            print(f"{target:<36} {'-':>8}  not built / not tested")
        else:
            print(f"{target:<36} {wall:8.1f}  {'within' if wall <= args.goal else 'OVER'}"
                  f"{'' if passed else ' (a check failed)'}")
    print(f"load after: {load()}")
    return 0 if ok and all(wall is not None for _, wall, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
