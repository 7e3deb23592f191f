"""The in-image smoke runner and checks (run here on this Python), and the host side's report."""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from builder.smoke.checks import CHECKS, COMMON_CHECKS
from builder.errors import SmokeError
from builder.safety.paths import templates_dir
from builder.smoke.run import KEPT, SMOKE_LIFETIME_S, SmokeReport, SmokeResult, run_smoke

SMOKE = templates_dir() / "context" / "smoke"


def _image_dir(tmp_path: Path, manifest: dict) -> Path:
    """A stand-in for /opt/stackbuild: the smoke folder plus a manifest."""
    root = tmp_path / "stackbuild"
    shutil.copytree(SMOKE, root / "smoke")
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _run(root: Path, *args: str):
    proc = subprocess.run([sys.executable, str(root / "smoke" / "run.py"), *args], capture_output=True, text=True)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def _checks(*names):
    return [{"name": c.name, "file": c.file, "gpu": c.gpu, "timeout": c.timeout}
            for c in COMMON_CHECKS if c.name in names]


def _here():
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_passing_checks(tmp_path):
    pins = {"pyyaml": md.version("pyyaml"), "jinja2": md.version("jinja2")}
    root = _image_dir(tmp_path, {"python": _here(), "pins": pins,
                                 "checks": _checks("python-version", "pins", "shm")})
    code, results = _run(root)
    assert code == 0
    assert [(r["check"], r["status"]) for r in results][:2] == [("python-version", "pass"), ("pins", "pass")]
    assert results[2]["check"] == "shm" and results[2]["status"] in ("pass", "warn")
    assert all(isinstance(r["seconds"], float) for r in results)


def test_a_wrong_pin_and_a_wrong_python_fail_with_the_fix(tmp_path):
    root = _image_dir(tmp_path, {"python": "3.4", "pins": {"pyyaml": "0.0.1", "not-a-package": "1.0"},
                                 "checks": _checks("python-version", "pins")})
    code, results = _run(root)
    assert code == 1
    assert results[0]["status"] == "fail" and "the release needs 3.4" in results[0]["detail"]
    assert results[1]["status"] == "fail"
    assert f"pyyaml=={md.version('pyyaml')} is installed, the release pins 0.0.1" in results[1]["detail"]
    assert "not-a-package is not installed" in results[1]["detail"]


def test_a_crashing_or_hanging_check_fails_alone(tmp_path):
    root = _image_dir(tmp_path, {"python": _here(), "pins": {}, "checks": [
        {"name": "crash", "file": "crash.py", "gpu": False},
        {"name": "hang", "file": "hang.py", "gpu": False, "timeout": 1},
        *_checks("python-version")]})
    (root / "smoke" / "checks" / "crash.py").write_text("raise SystemExit('boom')\n")
    (root / "smoke" / "checks" / "hang.py").write_text("import time\ntime.sleep(30)\n")
    code, results = _run(root)
    assert code == 1
    assert results[0]["status"] == "fail" and "crashed (exit 1): boom" in results[0]["detail"]
    assert results[1]["seconds"] >= 1
    assert results[1] == {"check": "hang", "status": "fail", "detail": "timed out after 1 s",
                          "seconds": results[1]["seconds"]}
    assert results[2]["status"] == "pass"


def test_a_broken_manifest_exits_2(tmp_path):
    root = _image_dir(tmp_path, {"python": _here()})
    code, results = _run(root)
    assert code == 2 and results[0]["check"] == "manifest"


def test_junit_report_is_valid_xml():
    report = SmokeReport("img", [SmokeResult("a", "pass", "ok", 0.1), SmokeResult("b", "fail", "bad <x>", 1.0),
                                 SmokeResult("c", "skip", "skip (no GPU)", 0.0)], exit_code=1)
    suite = ElementTree.fromstring(report.junit().split("?>", 1)[1])
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    assert suite.find("testcase[@name='b']/failure").get("message") == "bad <x>"


class _FakeEngine:
    def __init__(self, lines, code, existing=()):
        self.lines, self.code, self.removed, self.started = lines, code, [], []
        self.existing = list(existing)  # (name, label value, status)

    def containers(self, label):
        key, _, value = label.partition("=")
        assert key == "io.stackbuild.smoke"
        return [{"Id": f"id-{name}", "Name": f"/{name}", "State": {"Status": status}}
                for name, found, status in self.existing if found == value]

    def start_container(self, image, name, labels, gpus, shm_size=None, *, lifetime_s=None):
        self.started.append((labels, lifetime_s))
        return "cid"

    def exec_lines(self, container, command):
        return iter(self.lines), lambda: self.code

    def remove_container(self, container):
        self.removed.append(container)


def test_run_smoke_collects_results_and_removes_the_container():
    engine = _FakeEngine(['noise', '{"check": "pins", "status": "pass", "detail": "ok", "seconds": 0.5}'], 0)
    report = run_smoke(engine, "img")
    assert report.ok and [r.check for r in report.results] == ["pins"] and engine.removed == ["cid"]
    kept = _FakeEngine([], 0)
    assert run_smoke(kept, "img", keep=True).container.startswith("stackbuild-smoke-") and kept.removed == []
    # a kept container waits for ever, and is labelled so that no later run sweeps it; others stop by themselves
    assert kept.started == [({"io.stackbuild.smoke": KEPT}, None)]
    assert engine.started == [({"io.stackbuild.smoke": "1"}, SMOKE_LIFETIME_S)]


def test_a_smoke_run_outlives_every_check_timing_out_in_a_row():
    assert SMOKE_LIFETIME_S > sum(check.timeout for check in CHECKS.values())


def test_stopped_containers_of_killed_runs_are_swept_first_and_nothing_else():
    existing = [("dead-run", "1", "exited"), ("crashed", "1", "dead"), ("other-run", "1", "running"),
                ("just-made", "1", "created"), ("debugging", KEPT, "exited")]
    engine = _FakeEngine([], 0, existing)
    report = run_smoke(engine, "img")
    assert report.swept == ["dead-run", "crashed"] and report.as_dict()["swept"] == ["dead-run", "crashed"]
    assert engine.removed == ["id-dead-run", "id-crashed", "cid"]


def test_a_runner_that_cannot_run_is_an_error():
    with pytest.raises(SmokeError, match=r"could not run \(exit 127\)"):
        run_smoke(_FakeEngine([], 127), "busybox")


def test_only_runs_the_named_checks_and_refuses_unknown_names(tmp_path):
    root = _image_dir(tmp_path, {"python": _here(), "pins": {}, "checks": _checks("python-version", "pins", "shm")})
    code, results = _run(root, "--only", "pins")
    assert code == 0 and [r["check"] for r in results] == ["pins"]
    code, results = _run(root, "--only", "pins", "lora-saves")
    assert code == 2 and results == [{"check": "manifest", "status": "fail", "detail": "this image has no check "
                                      "lora-saves (its checks: python-version, pins, shm)"}]


def test_an_unknown_check_name_is_a_clear_error():
    line = ('{"check": "manifest", "status": "fail", "detail": "this image has no check x (its checks: pins)"}')
    with pytest.raises(SmokeError, match=r"^img: this image has no check x \(its checks: pins\)$"):
        run_smoke(_FakeEngine([line], 2), "img", only=["x"])


def test_a_check_that_hangs_is_killed_and_a_result_printed_before_the_hang_is_kept(tmp_path):
    checks = [{"name": "hangs-early", "file": "hangs_early.py", "gpu": False, "timeout": 2},
              {"name": "hangs-at-exit", "file": "hangs_at_exit.py", "gpu": False, "timeout": 2}]
    root = _image_dir(tmp_path, {"python": _here(), "pins": {}, "checks": checks})
    (root / "smoke" / "checks" / "hangs_early.py").write_text("import time\ntime.sleep(60)\n")
    (root / "smoke" / "checks" / "hangs_at_exit.py").write_text(
        "import json, sys, time\nprint(json.dumps({'status': 'pass', 'detail': 'did its work'}))\n"
        "sys.stdout.flush()\ntime.sleep(60)\n")
    code, results = _run(root)
    assert code == 1
    assert (results[0]["status"], results[0]["detail"]) == ("fail", "timed out after 2 s")
    assert (results[1]["status"], results[1]["detail"]) == (
        "warn", "did its work; its process then hung at exit and was killed after 2 s")


# a check that reports whether the shared module was already imported when it started, and its pid
_SHARED_CHECK = """{marker}
import json, os, sys
sys.path.insert(0, os.environ["SHARED_SITE"])
preloaded = "sharedmod" in sys.modules
import sharedmod
print(json.dumps({{"status": "pass", "detail": json.dumps([preloaded, os.getpid(), sharedmod.IMPORTED_BY])}}))
"""


def _shared_image(tmp_path: Path, markers: dict[str, str], broken: bool = False) -> Path:
    checks = [{"name": name, "file": f"{name}.py", "gpu": False} for name in markers]
    root = _image_dir(tmp_path, {"python": _here(), "pins": {}, "checks": checks})
    for name, marker in markers.items():
        (root / "smoke" / "checks" / f"{name}.py").write_text(_SHARED_CHECK.format(marker=marker))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sharedmod.py").write_text(("raise OSError('a broken sharedmod')\n" if broken else "") +
                                       "import os\nIMPORTED_BY = os.getpid()\n")
    return root


def _run_shared(tmp_path: Path, root: Path, *args: str):
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "SHARED_SITE": str(tmp_path / "site"),
           "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run([sys.executable, str(root / "smoke" / "run.py"), *args], capture_output=True, text=True,
                          env=env, timeout=60)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc, {r["check"]: json.loads(r["detail"]) if r["status"] == "pass" else r for r in results}


def test_checks_that_share_a_module_are_forked_from_a_runner_that_imported_it_once(tmp_path):
    root = _shared_image(tmp_path, {"a": "# smoke-runner: preload sharedmod", "b": "# smoke-runner: preload sharedmod",
                                    "own": "# smoke-runner: own-interpreter (watches its imports)",
                                    "plain": "", "single": "# smoke-runner: preload sharedmod2 (only one check)"})
    proc, got = _run_shared(tmp_path, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runner = got["a"][2]
    # a and b found it imported, by one process (the runner), not by themselves
    assert got["a"][0] and got["b"][0] and got["b"][2] == runner and got["a"][1] != got["b"][1] != runner
    # the check that needs its own interpreter imported it itself, as did one declaring a module no other shares
    assert got["own"][0] is False and got["own"][2] == got["own"][1]
    assert got["plain"][0] is True and got["plain"][2] == runner  # forked too, without declaring anything
    # sharedmod2 is declared by one check only: it imports it itself, beside the others
    assert "preloaded sharedmod in" in proc.stderr and "sharedmod2" not in proc.stderr


def test_isolated_and_a_failed_preload_give_every_check_a_fresh_interpreter(tmp_path):
    markers = {"a": "# smoke-runner: preload sharedmod", "b": "# smoke-runner: preload sharedmod"}
    root = _shared_image(tmp_path, markers)
    proc, got = _run_shared(tmp_path, root, "--isolated")
    assert proc.returncode == 0 and not got["a"][0] and not got["b"][0] and got["a"][2] == got["a"][1]
    broken = _shared_image(tmp_path / "broken", markers, broken=True)
    proc, got = _run_shared(tmp_path / "broken", broken)
    # the runner says why and runs each check alone; each check meets the broken import itself
    assert "preloading sharedmod failed (OSError: a broken sharedmod)" in proc.stderr
    assert got["a"]["status"] == "fail" and "OSError: a broken sharedmod" in got["a"]["detail"]


def test_checks_run_at_once_and_report_in_the_manifest_order(tmp_path):
    sleeper = "import json, time\ntime.sleep({})\nprint(json.dumps({{'status': 'pass', 'detail': 'slept'}}))\n"
    checks = [{"name": n, "file": f"{n}.py", "gpu": False} for n in ("slow", "fast1", "fast2")]
    root = _image_dir(tmp_path, {"python": _here(), "pins": {}, "checks": checks})
    (root / "smoke" / "checks" / "slow.py").write_text("# smoke-runner: early\n" + sleeper.format(3))
    for name in ("fast1", "fast2"):
        (root / "smoke" / "checks" / f"{name}.py").write_text(sleeper.format(1))
    code, results = _run(root, "--jobs", "2")
    assert code == 0 and [r["check"] for r in results] == ["slow", "fast1", "fast2"]
    # the fast ones ran one after the other beside the slow one
    assert all(r["seconds"] >= 1 for r in results) and results[0]["seconds"] >= 3
    code, serial = _run(root, "--jobs", "1")
    assert code == 0 and [r["check"] for r in serial] == ["slow", "fast1", "fast2"]


def test_an_exception_no_check_handled_ends_in_one_fail_line(tmp_path):
    checks = [{"name": "raises", "file": "raises.py", "gpu": False}]
    root = _image_dir(tmp_path, {"python": _here(), "pins": {}, "checks": checks})
    (root / "smoke" / "checks" / "raises.py").write_text(
        "from _smoke import context, quiet_stdout\ncontext()\nquiet_stdout()\n{}['missing']\n")
    for args in ((), ("--isolated",)):
        code, results = _run(root, *args)
        assert code == 1 and len(results) == 1
        assert results[0]["status"] == "fail"
        assert results[0]["detail"].startswith("the check raised KeyError: 'missing' at raises.py:4 (")


def test_a_fresh_interpreter_is_reaped_once_when_a_preloaded_module_runs_a_subprocess(tmp_path):
    # seen in the Python 3.9 images: numpy-torch (a fresh interpreter) ended during the preload, whose
    # imports ran a subprocess; subprocess reaped the dropped Popen, and the runner's waitpid then died
    # with ChildProcessError
    root = _shared_image(tmp_path, {"own": "# smoke-runner: own-interpreter", "a": "# smoke-runner: preload sharedmod",
                                    "b": "# smoke-runner: preload sharedmod"})
    (tmp_path / "site" / "sharedmod.py").write_text(
        "import os, subprocess, time\ntime.sleep(2)\nsubprocess.run(['true'])\nIMPORTED_BY = os.getpid()\n")
    (root / "smoke" / "checks" / "own.py").write_text(  # done long before the preload's subprocess
        "# smoke-runner: own-interpreter\nimport json\nprint(json.dumps({'status': 'pass', 'detail': '[]'}))\n")
    proc, got = _run_shared(tmp_path, root, "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    assert got["own"] == [] and got["a"][0] and got["b"][0]
