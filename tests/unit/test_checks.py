"""The registry of smoke checks, which checks each image carries, and the checks that run here.

Checks that need torch and the stacks' packages run in the integration tests, inside the images;
those that need only the standard library (or skip for a missing GPU) run here on this Python.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.smoke.checks import CHECKS, COMMON_CHECKS
from builder.profile.knowledge import load_knowledge_base
from builder.plan.build_plan import plan_build
from builder.profile.load import available_stacks, load_stack
from builder.safety.paths import templates_dir

CHECK_DIR = templates_dir() / "context" / "smoke" / "checks"


def test_every_registered_check_has_its_file_and_every_file_is_registered():
    files = {p.name for p in CHECK_DIR.glob("*.py") if not p.name.startswith("_")}
    assert files == {c.file for c in CHECKS.values()}


@pytest.mark.parametrize("path", sorted(CHECK_DIR.glob("*.py")), ids=lambda p: p.name)
def test_checks_parse_as_python_3_8(path):
    # era images run the checks on their own Python (3.9 on Debian bullseye, 3.10 on Ubuntu 22.04)
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))


def test_every_proof_the_knowledge_base_names_is_a_registered_check():
    named = {name for issue in load_knowledge_base().values() for name in issue.proven_by}
    assert named and named <= set(CHECKS)


def _releases():
    return [(s, r, t) for s in available_stacks() for r, rel in load_stack(s).releases.items() for t in rel.targets]


@pytest.mark.parametrize(("stack", "release", "target"), _releases(), ids=lambda v: str(v))
def test_each_image_carries_the_proof_of_every_fix_it_claims(stack, release, target):
    plan = plan_build(load_stack(stack), release, target)
    carried = [c["name"] for c in plan.manifest()["checks"]]
    assert carried[:len(COMMON_CHECKS)] == [c.name for c in COMMON_CHECKS]
    for fix in plan.fixes:
        assert set(fix.issue.proven_by) <= set(carried), fix.issue.id
    assert ("patches" in carried) == bool(plan.patches)


def test_profile_checks_add_to_what_the_fixes_imply():
    ds = plan_build(load_stack("deepspeed-zero3-offload"), "2026.11", "cpu")
    assert [c.name for c in ds.checks][len(COMMON_CHECKS):] == [
        "ninja", "deepspeed-ops", "deepspeed-cpu-adam", "deepspeed-config", "deepspeed-zero3-offload", "multinode"]


def _run(tmp_path: Path, name: str, manifest: dict, extra_path: Path | None = None) -> dict:
    arg = json.dumps({"check": {"name": name}, "manifest": manifest})
    # no __pycache__ written into the package's templates
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    proc = subprocess.run([sys.executable, str(CHECK_DIR / CHECKS[name].file), arg], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1])


GPU_MANIFEST = {"target": "cuda", "pins": {"flash-attn": "2.8.3.post2"}, "options": [], "compiled": []}


@pytest.mark.parametrize("name", [c.name for c in CHECKS.values() if c.gpu])
def test_gpu_checks_skip_without_a_gpu_never_pass(name, tmp_path):
    # this machine has no GPU (and the test venv no torch): a GPU check must say so, not pass
    result = _run(tmp_path, name, GPU_MANIFEST)
    assert result["status"] == "skip" and "no GPU" in result["detail"]


def test_flash_attn_checks_skip_where_the_target_does_not_build_it(tmp_path):
    for name in ("flash-attn-import", "flash-attn-fwd-bwd"):
        result = _run(tmp_path, name, {"target": "cpu", "pins": {}})
        assert result == {"status": "skip", "detail": "flash-attn is not in this image (the cpu target does not "
                                                      "build it)"}


def test_functools_cache_passes_here(tmp_path):
    assert _run(tmp_path, "functools-cache", {})["status"] == "pass"


def _fake_package(root: Path, text: str) -> Path:
    package = root / "site" / "fakepkg" / "sub"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(text)
    return root / "site"


PATCH = {"id": "demo-patch", "package": "fakepkg", "file": "sub/mod.py", "find": "x = x.clone()",
         "replace": "x = x.cpu().clone()", "count": 1}


def test_the_patch_check_finds_the_patch_in_the_imported_file(tmp_path):
    site = _fake_package(tmp_path, "def f(x):\n    x = x.cpu().clone()\n    return x\n")
    result = _run(tmp_path, "patches", {"patches": [PATCH]}, site)
    assert result == {"status": "pass", "detail": "patched: demo-patch (1 in fakepkg.sub.mod)"}


def test_the_patch_check_fails_on_an_unpatched_file_with_the_fix(tmp_path):
    site = _fake_package(tmp_path, "def f(x):\n    x = x.clone()\n    return x\n")
    result = _run(tmp_path, "patches", {"patches": [PATCH]}, site)
    assert result["status"] == "fail"
    assert "has 0 patched and 1 unpatched occurrence(s), expected 1 and 0" in result["detail"]
    assert "rebuild the image" in result["detail"]


def test_the_patch_check_skips_an_image_without_patches(tmp_path):
    assert _run(tmp_path, "patches", {"patches": []})["status"] == "skip"


def _dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _run_lock_check(tmp_path: Path, lock_text: str, manifest: dict) -> dict:
    """The lock check in a laid-out /opt/stackbuild, seeing only the fake distributions in site/."""
    root = tmp_path / "opt" / "stackbuild"
    shutil.copytree(CHECK_DIR, root / "smoke" / "checks")
    (root / "lock").mkdir()
    (root / "lock" / "4-packages.txt").write_text(lock_text)
    arg = json.dumps({"check": {"name": "lock"}, "manifest": manifest})
    proc = subprocess.run([sys.executable, "-S", str(root / "smoke" / "checks" / "lock.py"), arg], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                                    "PYTHONDONTWRITEBYTECODE": "1",
                                                                    "PYTHONPATH": str(tmp_path / "site")})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_lock_check_wants_exactly_the_locked_packages(tmp_path):
    site = tmp_path / "site"
    for name, version in (("six", "1.16.0"), ("requests", "2.0.0"), ("cowsay", "6.1"), ("pkg-resources", "0.0.0")):
        _dist(site, name, version)
    lock = "# the packages\nsix==1.16.0 \\\n    --hash=sha256:" + "a" * 64 + "\nrequests==2.32.3 \\\n" \
           "    --hash=sha256:" + "b" * 64 + "\nidna==3.4 \\\n    --hash=sha256:" + "c" * 64 + "\n"
    result = _run_lock_check(tmp_path, lock, {"locked": True})
    assert result["status"] == "fail"
    assert result["detail"] == ("idna==3.4 is locked but not installed; requests==2.0.0 is installed, the lock says "
                                "2.32.3; cowsay==6.1 is installed but not in the lock (something installed outside "
                                "the lock: rebuild)")


def test_the_lock_check_passes_on_the_lock_and_skips_without_one(tmp_path):
    _dist(tmp_path / "site", "six", "1.16.0")
    _dist(tmp_path / "site", "pkg-resources", "0.0.0")  # Debian's venv record, not an install
    lock = "six==1.16.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    assert _run_lock_check(tmp_path, lock, {"locked": True}) == {
        "status": "pass", "detail": "the 2 installed packages are exactly the lock's"}
    shutil.rmtree(tmp_path / "opt")
    assert _run_lock_check(tmp_path, lock, {"locked": False})["status"] == "skip"
