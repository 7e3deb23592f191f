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

from builder.engine import api as engine_api
from builder.profile import targets
from builder.engine.buildkit import BuildxEngine
from builder.engine.classic import DockerEngine
from tests.unit.conftest import FakeEngine

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    assert found, "lint-imports is not installed: it is in the test extra (pip install -e '.[test]')"
    return found


def test_the_declared_layers_and_the_docker_contract_hold():
    done = subprocess.run([_lint_imports()], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for contract in ("builder's layers", "engines know nothing of profiles, plans or rendering",
                     "doctor never imports an engine", "only builder.engine.classic imports docker"):
        assert f"{contract} KEPT" in done.stdout, done.stdout


def test_the_layers_are_few_and_every_package_has_its_place():
    import tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["type"] == "layers")["layers"]
    assert len(layers) <= 10
    placed = {name.strip().split(".")[0] for layer in layers for name in layer.split("|")}
    packages = {p.parent.name for p in (ROOT / "builder").glob("*/__init__.py")}
    modules = {p.stem for p in (ROOT / "builder").glob("*.py")} - {"__init__", "__main__"}
    assert packages | modules == placed


def test_lint_imports_fails_a_broken_layer_contract(tmp_path):
    # the same tool on a contract the code breaks (errors imported by everything, declared on top)
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "builder"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "upside down"\ntype = "layers"\ncontainers = ["builder"]\nlayers = ["errors", "cli"]\n')
    done = subprocess.run([_lint_imports(), "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "upside down BROKEN" in done.stdout


def test_lint_imports_fails_a_broken_forbidden_contract(tmp_path):
    # every engine module imports builder.errors: forbidding it must break
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "builder"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "engines without errors"\ntype = "forbidden"\nsource_modules = ["builder.engine"]\n'
                      'forbidden_modules = ["builder.errors"]\n')
    done = subprocess.run([_lint_imports(), "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "engines without errors BROKEN" in done.stdout


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))
            if "fixtures" not in p.relative_to(ROOT).parts]


def test_no_engine_kind_branch_outside_the_engine_package():
    """What differs between engines is each engine's to say (its dialect, check_options, build)."""
    branch = re.compile(r"\bengine\.kind\s*(==|!=)|\.kind\s*(==|!=)\s*[\"'](classic|buildkit)[\"']")
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in _python_files("builder", "bench", "tests")
                 if (ROOT / "builder" / "engine") not in path.parents
                 for number, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert offenders == []
    sample = "if engine.kind " + '== "classic":'  # (spelt in two: this file holds no such branch either)
    assert branch.search(sample) and branch.search("x.kind " + "!= 'buildkit'")


def test_only_the_buildkit_module_runs_docker_buildx():
    runs = re.compile(r"[\"']buildx[\"']\s*,")
    offenders = [str(path.relative_to(ROOT)) for path in _python_files("builder")
                 if runs.search(path.read_text()) and path != ROOT / "builder" / "engine" / "buildkit.py"]
    assert offenders == []
    assert runs.search((ROOT / "builder" / "engine" / "buildkit.py").read_text())


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
    assert (BuildxEngine.kind, DockerEngine.kind) == ("buildkit", "classic")


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
    for path in sorted((ROOT / "builder").rglob("*.py")) + sorted((ROOT / "templates" / "partials").glob("*.j2")):
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
    assert targets.gpu_devices("cpu", None) == "none" and targets.gpu_devices("cuda", None) == "all"
    assert engine_api.GpuRequest.of(targets.gpu_devices("cpu", None)) is None
    assert engine_api.GpuRequest.of(targets.gpu_devices("cuda", None)).count == -1
    assert engine_api.GpuRequest.of("0,1").device_ids == ["0", "1"] and engine_api.GpuRequest.of("2").count == 2


def test_the_cli_is_a_thin_shell():
    # its code, not its imports (one line a module it calls; the package layout adds a few)
    lines = (ROOT / "builder" / "cli" / "commands.py").read_text().splitlines()
    assert len([line for line in lines if not line.startswith(("from ", "import "))]) < 500


def test_one_name_value_parser_serves_build_args_and_container_env():
    from builder.images.build import parse_build_args
    from builder.images.containers import parse_env
    from builder.errors import ConfigError, UsageError

    assert parse_build_args(["HTTPS_PROXY=http://p:3128", "A=b=c"]) == {"HTTPS_PROXY": "http://p:3128", "A": "b=c"}
    assert parse_env(["A=b=c", "B="]) == {"A": "b=c", "B": ""}
    for bad in ("no-equals", "1A=x", "A-B=x"):
        with pytest.raises(ConfigError, match=f"--build-arg '{bad}' is not NAME=VALUE"):
            parse_build_args([bad])
        with pytest.raises(UsageError, match=f"--env {bad}: write it as NAME=VALUE"):
            parse_env([bad])


def test_lock_files_are_named_in_one_place():
    from builder.lock.format import lock_file
    from builder.plan.build_plan import lock_path, plan_for

    plan = plan_for("flash-attn-fsdp", "2023.06", "cuda", ["xformers"], with_lock=False)
    assert lock_path(plan) == lock_file(plan.stack.path, "flash-attn-fsdp", "2023.06", "cuda", ["xformers"])
    assert lock_path(plan).name == "flash-attn-fsdp@2023.06-cuda+xformers.txt"
    assert lock_path(plan).parent == plan.stack.path.parent / "locks"


def test_every_subpackage_says_what_it_owns_and_may_import():
    """Each subpackage's docstring is one sentence: what it owns, and what it may import."""
    packages = sorted(p.parent for p in (ROOT / "builder").rglob("__init__.py") if p.parent != ROOT / "builder")
    assert len(packages) >= 8
    for package in packages:
        tree = __import__("ast").parse((package / "__init__.py").read_text())
        doc = __import__("ast").get_docstring(tree) or ""
        where = package.relative_to(ROOT)
        assert doc, f"{where}/__init__.py has no docstring"
        sentence = " ".join(doc.split())
        assert sentence.endswith(".") and sentence.count(". ") == 0, f"{where}: not one sentence: {sentence}"
        assert re.search(r"\bimports?\b", sentence), f"{where}: does not say what it may import: {sentence}"


def test_builder_is_walkable():
    """At most 15 entries at builder/'s top, and no two modules whose names differ only by a suffix."""
    top = [p.name for p in (ROOT / "builder").iterdir() if p.name != "__pycache__" and not p.name.startswith(".")
           and (p.suffix == ".py" or (p / "__init__.py").is_file())]
    assert len(top) <= 15, sorted(top)
    names = sorted({p.stem for p in (ROOT / "builder").rglob("*.py") if p.stem != "__init__"}
                   | {p.name for p in (ROOT / "builder").rglob("*") if (p / "__init__.py").is_file()})
    # a name that is another name plus a suffix (engine/engines, lock/lockfile) hides which is which;
    # allowed: a different word that happens to start alike
    different_words = {("build", "buildkit"), ("build", "build_plan")}
    clashes = {(a, b) for a in names for b in names if a != b and b.startswith(a)} - different_words
    assert clashes == set()
    assert ("engine", "engines") in {(a, b) for a in ["engine", "engines"] for b in ["engine", "engines"]
                                     if a != b and b.startswith(a)}


def test_a_new_stack_is_one_profile_file(tmp_path):
    """A fifth stack is data: its profile alone loads, plans and renders every target (no module changes)."""
    from builder.plan.build_plan import plan_build
    from builder.profile.load import load_stack
    from builder.render.dockerfile import render_context

    profile = tmp_path / "my-new-stack.yaml"
    profile.write_text((ROOT / "stacks" / "qlora.yaml").read_text().replace("name: qlora", "name: my-new-stack", 1))
    stack = load_stack(str(profile))
    rendered = [render_context(plan_build(stack, rel.name, target, (), with_lock=False))
                for rel in stack.releases.values() for target in rel.targets]
    assert stack.name == "my-new-stack" and len(rendered) >= 2
    assert all("# my-new-stack@" in context.dockerfile for context in rendered)


def test_an_engine_is_its_module_and_its_name():
    """What the build orchestration asks of an engine is its dialect, check_options and build: nothing else.

    So a new engine is one module implementing builder/engine/api.py plus its name in connect.py.
    """
    from builder.engine import connect
    from builder.images import build as orchestration

    lines = (ROOT / "builder" / "images" / "build.py").read_text().splitlines()
    asked = set(re.findall(r"(?<![.\w])engine\.(\w+)", "\n".join(l for l in lines if not l.startswith("from "))))
    assert asked <= {"dialect", "check_options", "build", "kind", "address", "version", "tag", "close"}, asked
    assert set(connect.ENGINE_KINDS) == {"auto", DockerEngine.kind, BuildxEngine.kind}
    assert callable(orchestration.build_context)


def test_every_network_step_is_the_macros_one():
    """site_begin ... site_end is written once (templates/partials/macros.j2), so every network step gets the
    engine's dialect: a partial that spelt it out would build without BuildKit's secret and cache mounts."""
    spelt = [path.name for path in (ROOT / "templates").rglob("*.j2")
             if path.name != "macros.j2" and re.search(r"site_begin|site_end", path.read_text())]
    assert spelt == []
    assert "site_begin" in (ROOT / "templates" / "partials" / "macros.j2").read_text()


def test_the_readmes_layout_table_names_every_module():
    """README, Development: the layer table lists each subpackage's modules; a new module is added there."""
    import re
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    table = readme[readme.index("| layer | package (modules) | what it owns |"):]
    table = table[:table.index("\n\n")]
    listed = {(pkg, name) for pkg, names in re.findall(r"`(\w+)` \(([^)]*)\)", table)
              for name in re.findall(r"`(\w+)`", names)}
    packages = {folder.name for folder in (root / "builder").iterdir() if (folder / "__init__.py").exists()}
    listed |= {(pkg, name) for pkg, name in re.findall(r"`(\w+)\.(\w+)`", table) if pkg in packages}
    modules = {(package, module.stem) for package in packages for module in (root / "builder" / package).glob("*.py")
               if module.stem != "__init__"}
    assert sorted(modules - listed) == [], "modules missing from README's layout table"
    assert sorted(listed - modules) == [], "README's layout table names modules that do not exist"
