"""The smoke runner inside an image: run every check the manifest lists, print one JSON line each.

Usage: python /opt/stackbuild/smoke/run.py [--only NAME ...] [--timeout SECONDS]

Runs with the image's own Python and packages, offline, with nothing of stackbuild installed.
Each check is a file in checks/ that prints one JSON object as its last line of output
({"check", "status": pass|warn|fail|skip, "detail"}); the runner adds "seconds" and enforces a
per-check timeout. Exit status: 0 when no check failed, 1 otherwise, 2 on a broken manifest or
an unknown check name.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(os.path.dirname(HERE), "manifest.json")
STATUSES = ("pass", "warn", "fail", "skip")


def last_result(stdout):
    """The last JSON result line a check printed, or None."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            candidate = json.loads(line)
        except ValueError:
            continue
        if isinstance(candidate, dict) and candidate.get("status") in STATUSES:
            return candidate
    return None


def run_check(check, manifest, timeout):
    path = os.path.join(HERE, "checks", check["file"])
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, path, json.dumps({"check": check, "manifest": manifest})],
            capture_output=True, text=True, timeout=check.get("timeout", timeout),
        )
    except subprocess.TimeoutExpired as exc:
        limit = check.get("timeout", timeout)
        out = exc.stdout.decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        done = last_result(out)
        if done is None:
            return {"check": check["name"], "status": "fail", "detail": "timed out after {} s".format(limit)}
        # the check said what it found, then its process did not exit (a library's threads at shutdown)
        note = "; its process then hung at exit and was killed after {} s".format(limit)
        status = "warn" if done["status"] == "pass" else done["status"]
        return {"check": check["name"], "status": status, "detail": done.get("detail", "") + note,
                "seconds": round(time.monotonic() - started, 2)}
    result = last_result(proc.stdout)
    if result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        result = {"status": "fail", "detail": "the check crashed (exit {}): {}".format(proc.returncode, " | ".join(tail))}
    result["check"] = check["name"]
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def main():
    parser = argparse.ArgumentParser(description="Run the image's smoke checks.")
    parser.add_argument("--only", nargs="*", default=None, help="run only these checks")
    parser.add_argument("--timeout", type=float, default=600.0, help="default per-check timeout in seconds")
    args = parser.parse_args()
    try:
        with open(MANIFEST, encoding="utf-8") as handle:
            manifest = json.load(handle)
        checks = manifest["checks"]
    except (OSError, ValueError, KeyError) as exc:
        print(json.dumps({"check": "manifest", "status": "fail", "detail": "cannot read {}: {}".format(MANIFEST, exc)}))
        return 2
    unknown = sorted(set(args.only or ()) - {check["name"] for check in checks})
    if unknown:
        print(json.dumps({"check": "manifest", "status": "fail", "detail": "this image has no check {} (its checks: "
                          "{})".format(", ".join(unknown), ", ".join(check["name"] for check in checks))}))
        return 2
    failed = False
    for check in checks:
        if args.only is not None and check["name"] not in args.only:
            continue
        result = run_check(check, manifest, args.timeout)
        failed = failed or result["status"] == "fail"
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
