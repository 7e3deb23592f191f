"""A check that crashes is a defect: with any package it imports missing or broken, every check
ends in exactly one JSON result line (fail with a fix, or skip where it does not apply) and no
traceback.

Each check runs here, on this Python, with a sitecustomize on PYTHONPATH whose meta-path finder
refuses the third-party packages: "missing" raises ModuleNotFoundError, "broken" raises OSError
(an undefined symbol) and leaves a dist-info behind, so importlib.metadata says the package is
installed while its import fails. A third mode puts a stub torch in front that claims two GPUs, so
the GPU branches reach their own imports (flash_attn, bitsandbytes, deepspeed). The checks get real
manifests (every stack's current and era release, both targets).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from builder.smoke.checks import CHECKS
from builder.plan.build_plan import plan_build
from builder.profile.load import available_stacks, load_stack
from builder.safety.paths import templates_dir

CHECK_DIR = templates_dir() / "context" / "smoke" / "checks"

# Every third-party module a check imports (the AST test below keeps this list complete).
THIRD_PARTY = ("torch", "transformers", "peft", "deepspeed", "flash_attn", "flash_attn_cuda", "flash_attn_2_cuda",
               "bitsandbytes", "datasets", "accelerate", "numpy", "sentencepiece", "tokenizers", "safetensors",
               "huggingface_hub", "pyarrow", "fsspec", "pydantic", "google", "oneccl_bindings_for_pytorch",
               "intel_extension_for_pytorch", "triton", "fire", "scipy")
# what a fix says: the one thing to do
FIX = re.compile(r"\b(install|pin|rebuild|build|upgrade|use|run with|set|put|add)\b", re.IGNORECASE)

SITECUSTOMIZE = '''
import importlib.abc, os, sys
HIDDEN = set(os.environ["SMOKE_HIDE"].split(","))
MODE = os.environ["SMOKE_HIDE_MODE"]
LOG = os.environ["SMOKE_HIDE_LOG"]


class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in HIDDEN:
            return None
        with open(LOG, "a") as handle:
            handle.write(fullname + "\\n")
        if MODE == "broken":
            raise OSError("/opt/venv/lib/{0}/_C.so: undefined symbol: _ZN3c1019UndefinedTensorImpl10_singletonE "
                          "(a broken {0})".format(fullname))
        raise ModuleNotFoundError("No module named {!r}".format(fullname), name=fullname)


sys.meta_path.insert(0, Hide())
'''

# torch that imports and reports two GPUs, and nothing else: the GPU branches run up to their imports
FAKE_GPU_TORCH = '''
__version__ = "2.10.0+cu128"


class cuda:
    @staticmethod
    def is_available():
        return True

    @staticmethod
    def device_count():
        return 2


class version:
    cuda = "12.8"
    hip = None
'''

DIST_NAMES = {"flash_attn": "flash-attn", "google": "protobuf", "huggingface_hub": "huggingface-hub"}


def _manifests() -> dict[str, list[dict]]:
    """For each check, one manifest of a current (2026) and one of an era release carrying it, per target."""
    found: dict[str, list[dict]] = {}
    for stack_name in available_stacks():
        stack = load_stack(stack_name)
        for release_name, release in stack.releases.items():
            for target in release.targets:
                # the plain image, then each option's (an option's checks are carried only with it)
                choices = [()] + [(o,) for o, spec in release.options.items() if target in spec.targets]
                for options in choices:
                    manifest = plan_build(stack, release_name, target, options).manifest()
                    for check in manifest["checks"]:
                        carried = found.setdefault(check["name"], [])
                        if not any(m["target"] == target and m["release"][:4] == release_name[:4] for m in carried):
                            carried.append(manifest)
    return found


MANIFESTS = _manifests()


def _run(tmp_path: Path, name: str, manifest: dict, mode: str, hidden: tuple[str, ...] = THIRD_PARTY) -> dict:
    """Run one check with ``hidden`` refused; return its stdout lines, stderr, and the imports refused.

    mode: "missing" (not installed), "broken" (installed, the import fails), "fake-gpu" (broken, and a
    stub torch that reports two GPUs) or "fake-gpu-missing" (missing, and that stub torch).
    """
    site = tmp_path / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    if mode.startswith("fake-gpu"):
        hidden = tuple(m for m in hidden if m != "torch")
        (site / "torch").mkdir(exist_ok=True)
        (site / "torch" / "__init__.py").write_text(FAKE_GPU_TORCH)
    if mode in ("broken", "fake-gpu"):  # installed as far as importlib.metadata can tell, but the import fails
        for module in hidden:
            dist = DIST_NAMES.get(module, module)
            version = manifest.get("pins", {}).get(dist, "1.0.0")
            version = "0.0.0" if version.startswith("git+") else version
            info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
            info.mkdir(exist_ok=True)
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
            (info / "top_level.txt").write_text(module + "\n")
    log = tmp_path / "refused.txt"
    log.write_text("")
    arg = json.dumps({"check": {"name": name, "file": CHECKS[name].file}, "manifest": manifest})
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(site),
           "SMOKE_HIDE_MODE": "missing" if mode.endswith("missing") else "broken", "SMOKE_HIDE": ",".join(hidden),
           "SMOKE_HIDE_LOG": str(log)}
    proc = subprocess.run([sys.executable, str(CHECK_DIR / CHECKS[name].file), arg], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    return {"lines": [line for line in proc.stdout.splitlines() if line.strip()], "stderr": proc.stderr,
            "code": proc.returncode, "refused": sorted(set(log.read_text().split())), "manifest": manifest}


def _verify(name: str, mode: str, run: dict) -> list[str]:
    """What is wrong with one run, as short phrases (empty: it ended cleanly)."""
    where = f"{name} [{mode}] on {run['manifest']['stack']}@{run['manifest']['release']}-{run['manifest']['target']}"
    if len(run["lines"]) != 1:
        return [f"{where}: {len(run['lines'])} stdout lines, not one JSON result: {run['lines'][-3:]} "
                f"stderr: {run['stderr'][-600:]}"]
    try:
        result = json.loads(run["lines"][0])
    except ValueError:
        return [f"{where}: stdout is not JSON: {run['lines'][0][:300]}"]
    problems = []
    if "Traceback (most recent call last)" in run["stderr"]:
        problems.append(f"{where}: a traceback on stderr: {run['stderr'][-600:]}")
    if run["code"] != 0:
        problems.append(f"{where}: exit {run['code']}")
    status, detail = result.get("status"), result.get("detail", "")
    if status not in ("pass", "warn", "fail", "skip"):
        problems.append(f"{where}: status {status!r}")
    if status in ("pass", "warn") and run["refused"]:
        problems.append(f"{where}: {status} although importing {', '.join(run['refused'])} failed: {detail}")
    if status == "fail" and not FIX.search(detail):
        problems.append(f"{where}: the fail names no fix: {detail}")
    if "the check raised" in detail:  # _smoke's last resort: an exception no check handled
        problems.append(f"{where}: an unhandled exception reached the last resort: {detail}")
    return problems


CHECK_NAMES = sorted(CHECKS)


# the checks whose GPU branch imports something besides torch (the stub torch has nothing but its GPU count)
FAKE_GPU_CHECKS = ("flash-attn-import", "flash-attn-fwd-bwd", "bitsandbytes-cuda", "transformers-4bit",
                   "deepspeed-ops", "deepspeed-cpu-adam", "deepspeed-config", "deepspeed-zero3-offload",
                   "adalomo-trainer")
CASES = [(name, mode) for name in CHECK_NAMES for mode in ("missing", "broken")] + [
    (name, "fake-gpu") for name in FAKE_GPU_CHECKS]


@pytest.mark.parametrize(("name", "mode"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_a_check_ends_in_one_json_result_with_its_packages_missing_or_broken(name, mode, tmp_path):
    manifests = MANIFESTS.get(name, [])
    assert manifests, f"no image carries {name}"
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda pair: _run(tmp_path / str(pair[0]), name, pair[1], mode), enumerate(manifests)))
    problems = [p for run in runs for p in _verify(name, mode, run)]
    assert not problems, "\n".join(problems)


def test_fwd_bwd_fails_with_the_fix_on_a_gpu_without_flash_attn(tmp_path):
    # seen on an H200: flash_attn_fwd_bwd crashed with a traceback where flash-attn was not built
    manifest = next(m for m in MANIFESTS["flash-attn-fwd-bwd"] if m["target"] == "cuda" and m["release"] == "2026.11")
    run = _run(tmp_path, "flash-attn-fwd-bwd", manifest, "fake-gpu-missing", ("flash_attn", "flash_attn_2_cuda"))
    assert _verify("flash-attn-fwd-bwd", "fake-gpu-missing", run) == []
    result = json.loads(run["lines"][0])
    assert result["status"] == "fail"
    assert "No module named 'flash_attn'" in result["detail"]
    assert "pip install --no-build-isolation flash-attn==2.8.3.post2" in result["detail"]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.add(node.args[0].value.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(CHECK_DIR.glob("*.py")), ids=lambda p: p.name)
def test_every_third_party_module_a_check_imports_is_one_the_test_hides(path):
    third_party = _imported_modules(path) - set(sys.stdlib_module_names) - {"_smoke", "__future__"}
    assert third_party <= set(THIRD_PARTY), sorted(third_party - set(THIRD_PARTY))
