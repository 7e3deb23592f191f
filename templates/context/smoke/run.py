"""The smoke runner inside an image: run every check the manifest lists, print one JSON line each.

Usage: python /opt/stackbuild/smoke/run.py [--only NAME ...] [--timeout SECONDS] [--jobs N] [--isolated]

Runs with the image's own Python and packages, offline, with nothing of stackbuild installed.
Each check is a file in checks/ that prints one JSON object as its last line of output
({"check", "status": pass|warn|fail|skip, "detail"}); the runner adds "seconds" (the check's own
wall time) and enforces a per-check timeout. Exit status: 0 when no check failed, 1 otherwise, 2 on
a broken manifest or an unknown check name.

Every check runs in a process of its own. Where no GPU is visible, the runner first imports the
modules that two or more of the selected checks declare (a line "# smoke-runner: preload MODULE ..."
in the check file: torch, transformers, ...) and forks each check from that warm process, as DataLoader
workers are forked, so that torch is imported once rather than once per check; a check that must
see its imports happen (a line "# smoke-runner: own-interpreter") gets a fresh interpreter. Up to
--jobs checks run at once, the cores divided among them (OMP_NUM_THREADS, unless it is set). Where a GPU is visible (one of the device nodes the manifest names
for the image's accelerator: its runtime may not be initialised before a fork), with --isolated, or when a preload fails, every check gets a fresh interpreter, one at a time, as
`python checks/FILE.py '{"check": ..., "manifest": ...}'`.
"""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKS_DIR = os.path.join(HERE, "checks")
MANIFEST = os.path.join(os.path.dirname(HERE), "manifest.json")
STATUSES = ("pass", "warn", "fail", "skip")
MARKER = re.compile(r"^# smoke-runner: (.*)$", re.MULTILINE)


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


def declared(check):
    """What a check's "# smoke-runner:" line says: (modules it may share from a preloaded process, whether it
    needs an interpreter of its own, whether to start it before the others).

    The line holds clauses separated by ";": "preload MODULE ...", "own-interpreter", "early" (a
    long check, started first so that the others run beside it); a parenthesis says why.
    """
    try:
        with open(os.path.join(CHECKS_DIR, check["file"]), encoding="utf-8") as handle:
            head = handle.read(8192)
    except OSError:
        return [], True, False  # the runner reports the missing file as the check's crash
    modules, own, early = [], False, False
    for line in MARKER.findall(head):
        for clause in line.split(";"):
            words = clause.split("(")[0].split()
            if words[:1] == ["preload"]:
                modules += words[1:]
            own = own or words[:1] == ["own-interpreter"]
            early = early or words[:1] == ["early"]
    return modules, own, early


def gpu_visible(manifest):
    """A device node of the image's accelerator is here (the manifest's device_nodes, globs written from the
    target's accelerator entry; none for a cpu image): its runtime must not be initialised in a process that
    then forks."""
    return any(glob.glob(pattern) for pattern in manifest.get("device_nodes", ()))


def preload(modules, scratch):
    """Import the shared modules in this process; (seconds, None) or (seconds, why it failed).

    The Hugging Face libraries read their settings when imported: make them offline, with their
    caches in a folder of this run, as each check's offline_hf() would. What the libraries print
    while they are imported (banners, warnings) goes to a log in that folder.
    """
    started = time.monotonic()
    os.environ.update({
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": os.path.join(scratch, "hf"), "HF_DATASETS_CACHE": os.path.join(scratch, "datasets"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
    })
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(os.path.join(scratch, "preload.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        import importlib
        for name in modules:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                    raise
                # not in this image (bitsandbytes beside peft, say): the checks that need it say so
    except BaseException as exc:  # the checks import it themselves and report what is wrong
        return time.monotonic() - started, "{}: {}".format(type(exc).__name__, str(exc).strip()[:200])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
    return time.monotonic() - started, None


class Running:
    """One check's process: forked from this one, or a fresh interpreter."""

    def __init__(self, check, manifest, timeout, scratch, fork):
        self.check = check
        self.limit = check.get("timeout", timeout)
        self.path = os.path.join(CHECKS_DIR, check["file"])
        self.out = os.path.join(scratch, "{}.out".format(check["name"]))
        self.err = os.path.join(scratch, "{}.err".format(check["name"]))
        argument = json.dumps({"check": check, "manifest": manifest})
        self.started = time.monotonic()
        self.status = None
        self.process = None  # the Popen of a fresh interpreter: it, not os.waitpid, reaps its process
        if fork:
            self.pid = self._fork(argument)
        else:
            with open(self.out, "wb") as out, open(self.err, "wb") as err:
                self.process = subprocess.Popen([sys.executable, self.path, argument], stdout=out, stderr=err,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            self.pid = self.process.pid

    def _fork(self, argument):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        # the child: become `python checks/FILE.py ARGUMENT`, with the preloaded modules already imported
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for fd, path in ((1, self.out), (2, self.err)):
                handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(handle, fd)
                os.close(handle)
            sys.argv = [self.path, argument]
            sys.path.insert(0, CHECKS_DIR)
            import runpy
            try:
                runpy.run_path(self.path, run_name="__main__")
                code = 0
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    sys.stderr.write("{}\n".format(exc.code))
            except BaseException:  # what the interpreter would do with an uncaught exception
                sys.excepthook(*sys.exc_info())
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def poll(self):
        """The exit status once the process has ended, else None."""
        if self.status is None and self.process is not None:
            self.status = self.process.poll()
        elif self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (
                    -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
        return self.status

    def overdue(self):
        return time.monotonic() - self.started > self.limit

    def kill(self):
        """Kill the check and everything it started (its own session)."""
        for target in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: os.kill(self.pid, signal.SIGKILL)):
            try:
                target()
            except OSError:
                pass
        if self.process is not None:
            self.process.wait()
        else:
            os.waitpid(self.pid, 0)

    def read(self, path):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def result(self, timed_out):
        seconds = round(time.monotonic() - self.started, 2)
        out = self.read(self.out)
        done = last_result(out)
        if timed_out:
            if done is None:
                return {"check": self.check["name"], "status": "fail",
                        "detail": "timed out after {} s".format(self.limit), "seconds": seconds}
            # the check said what it found, then its process did not exit (a library's threads at shutdown)
            note = "; its process then hung at exit and was killed after {} s".format(self.limit)
            status = "warn" if done["status"] == "pass" else done["status"]
            return {"check": self.check["name"], "status": status, "detail": done.get("detail", "") + note,
                    "seconds": seconds}
        if done is None:
            tail = (self.read(self.err) or out).strip().splitlines()[-5:]
            done = {"status": "fail", "detail": "the check crashed (exit {}): {}".format(self.status, " | ".join(tail))}
        done["check"] = self.check["name"]
        done["seconds"] = seconds
        return done


def run_checks(checks, manifest, timeout, jobs, isolated):
    """Run the checks, yielding each result in the manifest's order as soon as it and those before it are done."""
    scratch = tempfile.mkdtemp(prefix="smoke-run-")
    plans = [(check,) + declared(check) for check in checks]  # (check, modules, own interpreter, early)
    pending = [plan for plan in plans if plan[3]] + [plan for plan in plans if not plan[3]]
    running, finished, next_out = [], {}, 0
    shared = not isolated and not gpu_visible(manifest) and hasattr(os, "fork")
    if not shared:
        jobs = 1
    elif jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        # checks running at once share the cores: torch's OpenMP threads spin-wait for each other, and a tiny
        # model's step takes seconds instead of milliseconds when more of them run than there are cores
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
    try:
        if shared:
            # the checks with an interpreter of their own need no preload: they start beside it
            for plan in [plan for plan in pending if plan[2]][:jobs - 1]:
                pending.remove(plan)
                running.append(Running(plan[0], manifest, timeout, scratch, fork=False))
            # what two or more of the forked checks share: a module only one check imports is imported there,
            # beside the other checks, rather than here before all of them
            declared_by = [m for _, modules, own, _ in plans if not own for m in modules]
            wanted = []
            for module in declared_by:
                if declared_by.count(module) > 1 and module not in wanted:
                    wanted.append(module)
            seconds, failure = preload(wanted, scratch)
            if failure:
                # an image whose shared modules do not import: every check imports them itself, and says why
                sys.stderr.write("smoke runner: preloading {} failed ({}); each check runs in a fresh "
                                 "interpreter\n".format(" ".join(wanted), failure))
                shared = False
            else:
                sys.stderr.write("smoke runner: preloaded {} in {:.1f} s\n".format(" ".join(wanted) or "nothing",
                                                                                   seconds))
        while pending or running:
            while pending and len(running) < jobs:
                check, _, own, _ = pending.pop(0)
                running.append(Running(check, manifest, timeout, scratch, fork=shared and not own))
            time.sleep(0.05)
            for job in list(running):
                ended = job.poll() is not None
                if ended or job.overdue():
                    if not ended:
                        job.kill()
                    finished[job.check["name"]] = job.result(timed_out=not ended)
                    running.remove(job)
            while next_out < len(plans) and plans[next_out][0]["name"] in finished:
                yield finished.pop(plans[next_out][0]["name"])
                next_out += 1
    finally:
        for job in running:  # interrupted: leave no check behind
            if job.poll() is None:
                job.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description="Run the image's smoke checks.")
    parser.add_argument("--only", nargs="*", default=None, help="run only these checks")
    parser.add_argument("--timeout", type=float, default=600.0, help="default per-check timeout in seconds")
    parser.add_argument("--jobs", type=int, default=2, help="checks run at once where no GPU is visible (default 2)")
    parser.add_argument("--isolated", action="store_true",
                        help="every check in a fresh interpreter, one at a time, nothing preloaded")
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
    selected = [check for check in checks if args.only is None or check["name"] in args.only]
    failed = False
    for result in run_checks(selected, manifest, args.timeout, max(1, args.jobs), args.isolated):
        failed = failed or result["status"] == "fail"
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
