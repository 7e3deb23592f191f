"""The architecture holds: declared layers, one engine interface, one targets table, a thin CLI."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder import engine_api, targets
from builder.buildx import BuildxEngine
from builder.engine import DockerEngine
from tests.unit.conftest import FakeEngine

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    assert found, "lint-imports is not installed: it is in the test extra (pip install -e '.[test]')"
    return found


def test_the_declared_layers_and_the_docker_contract_hold():
    done = subprocess.run([_lint_imports()], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "builder's layers KEPT" in done.stdout and "only builder.engine imports docker KEPT" in done.stdout


def test_lint_imports_fails_a_broken_layer_contract(tmp_path):
    # the same tool on a contract the code breaks (errors imported by everything, declared on top)
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "builder"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "upside down"\ntype = "layers"\ncontainers = ["builder"]\nlayers = ["errors", "cli"]\n')
    done = subprocess.run([_lint_imports(), "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "upside down BROKEN" in done.stdout


def _problems(cls: type, protocol: type) -> list[str]:
    """Every method of ``protocol`` that ``cls`` lacks or cannot be called like."""
    problems = []
    for name, want in inspect.getmembers(protocol, inspect.isfunction):
        if name.startswith("_"):
            continue
        have = getattr(cls, name, None)
        if have is None:
            problems.append(f"{cls.__name__} has no {name}")
            continue
        params = inspect.signature(have).parameters
        takes_any = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
        for param in inspect.signature(want).parameters.values():
            if param.name not in params and not takes_any:
                problems.append(f"{cls.__name__}.{name} has no parameter {param.name}")
            elif param.name in params and params[param.name].kind != param.kind and param.kind != param.KEYWORD_ONLY:
                problems.append(f"{cls.__name__}.{name}: {param.name} is {params[param.name].kind.description}, "
                                f"the interface says {param.kind.description}")
        extra = [p for p in params if p not in inspect.signature(want).parameters
                 and params[p].default is params[p].empty
                 and params[p].kind not in (params[p].VAR_POSITIONAL, params[p].VAR_KEYWORD)]
        if extra:
            problems.append(f"{cls.__name__}.{name} needs parameters the interface does not pass: {extra}")
    for attribute in getattr(protocol, "__annotations__", {}):
        if not hasattr(cls, attribute) and attribute not in inspect.signature(cls.__init__).parameters:
            problems.append(f"{cls.__name__} has no attribute {attribute}")
    return problems


def test_the_docker_engine_implements_the_whole_engine_interface():
    assert _problems(DockerEngine, engine_api.Engine) == []


def test_the_buildkit_engine_implements_the_whole_engine_interface():
    assert _problems(BuildxEngine, engine_api.Engine) == []
    assert BuildxEngine.kind == "buildkit" and DockerEngine.kind == "classic"


def test_the_unit_tests_fake_engine_implements_the_image_interface():
    assert _problems(FakeEngine, engine_api.ImageEngine) == []
    assert isinstance(FakeEngine(), engine_api.ImageEngine)


def test_the_interface_check_catches_a_missing_method_and_a_wrong_signature():
    class Broken:
        address = "x"

        def image(self, name):  # the interface calls it with ref=
            return None

    problems = _problems(Broken, engine_api.ImageEngine)
    assert "Broken.image has no parameter ref" in problems and "Broken has no build" in problems


COMPARISON = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](?:%s)["']|["'](?:%s)["']\s*(==|!=|\bin\b)"""
                        % ("|".join(targets.NAMES), "|".join(targets.NAMES)))


def test_no_module_but_the_targets_table_compares_a_target_name():
    offenders = []
    for path in sorted((ROOT / "builder").glob("*.py")) + sorted((ROOT / "templates" / "partials").glob("*.j2")):
        if path.name == "targets.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if COMPARISON.search(line) or re.search(r"\.get\(\s*[\"'](?:%s)[\"']" % "|".join(targets.NAMES), line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
    assert COMPARISON.search('if target == "cuda":') and COMPARISON.search("'cpu' in names")


def test_no_smoke_check_compares_the_target_name():
    """In the image the checks branch on the manifest's accelerator (from the targets table), never on a name."""
    reads_target = re.compile(r"""manifest(?:\.get\(|\[)\s*["']target["']\s*[)\]]\s*(?:==|!=|in\b)|"""
                              r"""\btarget\s*(?:==|!=)\s*["']""")
    offenders = []
    for path in sorted((ROOT / "templates" / "context" / "smoke").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if reads_target.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
    assert reads_target.search('if manifest.get("target") != "cuda":') and reads_target.search("if target == 'cpu':")


def test_every_target_entry_answers_what_the_rest_asks():
    for name, entry in targets.TARGETS.items():
        assert entry.name == name and entry.image_size > 0 and entry.default_gpus() in ("all", "none")
        assert entry.lock_platform("2_35").endswith("-manylinux_2_35")
    assert targets.default_of({"cpu": 1, "cuda": 2}) == "cuda" and targets.default_of({"cpu": 1}) == "cpu"
    assert targets.gpu_request("cpu", None) is None and targets.gpu_request("cuda", None).count == -1
    assert targets.gpu_request("cuda", "0,1").device_ids == ["0", "1"] and targets.gpu_request(None, "2").count == 2


def test_the_cli_is_a_thin_shell():
    assert len((ROOT / "builder" / "cli.py").read_text().splitlines()) < 500


def test_one_name_value_parser_serves_build_args_and_container_env():
    from builder.build import parse_build_args
    from builder.containers import parse_env
    from builder.errors import ConfigError, UsageError

    assert parse_build_args(["HTTPS_PROXY=http://p:3128", "A=b=c"]) == {"HTTPS_PROXY": "http://p:3128", "A": "b=c"}
    assert parse_env(["A=b=c", "B="]) == {"A": "b=c", "B": ""}
    for bad in ("no-equals", "1A=x", "A-B=x"):
        with pytest.raises(ConfigError, match=f"--build-arg '{bad}' is not NAME=VALUE"):
            parse_build_args([bad])
        with pytest.raises(UsageError, match=f"--env {bad}: write it as NAME=VALUE"):
            parse_env([bad])


def test_lock_files_are_named_in_one_place():
    from builder.lockfile import lock_file
    from builder.plan import lock_path, plan_for

    plan = plan_for("flash-attn-fsdp", "2023.06", "cuda", ["xformers"], with_lock=False)
    assert lock_path(plan) == lock_file(plan.stack.path, "flash-attn-fsdp", "2023.06", "cuda", ["xformers"])
    assert lock_path(plan).name == "flash-attn-fsdp@2023.06-cuda+xformers.txt"
    assert lock_path(plan).parent == plan.stack.path.parent / "locks"
