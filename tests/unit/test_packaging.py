"""stacks/ and templates/ ship inside the wheel: an install outside the checkout works alone."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from builder.plan.build_plan import plan_build
from builder.profile.load import load_stack
from builder.render.dockerfile import render_dockerfile

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_works_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, text=True)
    wheel = next(wheels.glob("stackbuild-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "builder/_data/stacks/qlora.yaml" in names
    assert "builder/_data/stacks/known-issues.yaml" in names
    assert "builder/_data/templates/Dockerfile.j2" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], check=True,
                   capture_output=True, text=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exe = str(venv / "bin" / "stackbuild")
    listed = subprocess.run([exe, "list", "--json"], cwd=elsewhere, capture_output=True, text=True, check=True)
    assert {row["name"] for row in json.loads(listed.stdout)} == {
        "alpaca-lora", "deepspeed-zero3-offload", "flash-attn-fsdp", "qlora"}
    rendered = subprocess.run([exe, "render", "flash-attn-fsdp@2023.06", "--context", "ctx"], cwd=elsewhere,
                              capture_output=True, text=True, check=True)
    assert rendered.stderr == ""
    assert (elsewhere / "ctx" / "patches" / "apply_patch.py").is_file()
    in_checkout = render_dockerfile(plan_build(load_stack("flash-attn-fsdp"), "2023.06", "cuda"))
    assert (elsewhere / "ctx" / "Dockerfile").read_text() == in_checkout
