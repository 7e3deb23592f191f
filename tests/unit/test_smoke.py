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

from builder.checks import COMMON_CHECKS
from builder.errors import SmokeError
from builder.resources import templates_dir
from builder.smoke import SmokeReport, SmokeResult, run_smoke

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
    assert results[1] == {"check": "hang", "status": "fail", "detail": "timed out after 1 s"}
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
    def __init__(self, lines, code):
        self.lines, self.code, self.removed = lines, code, []

    def start_container(self, image, name, labels, gpus, shm_size=None):
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
