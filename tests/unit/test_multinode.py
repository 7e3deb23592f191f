"""Multi-node-ready images: which releases get the layer, where it sits, what it carries."""

from __future__ import annotations

import subprocess

import pytest

from builder.plan.build_plan import MULTINODE_APT, plan_build
from builder.profile.load import available_stacks, load_stack
from builder.render.dockerfile import render_context
from builder.safety.paths import templates_dir

SSHD = templates_dir() / "context" / "multinode" / "stackbuild-sshd"


def _current_and_era():
    for name in available_stacks():
        stack = load_stack(name)
        for release in stack.releases.values():
            for target in release.targets:
                yield stack, release, target


@pytest.mark.parametrize("stack,release,target", list(_current_and_era()),
                         ids=lambda v: getattr(v, "name", v))
def test_current_releases_are_multinode_ready_and_era_releases_unchanged(stack, release, target):
    plan = plan_build(stack, release.name, target)
    context = render_context(plan)
    files = dict(context.files)
    assert plan.multinode_apt == (MULTINODE_APT if not release.era else ())
    assert release.multinode is (not release.era)
    if release.era:
        assert "multinode" not in context.dockerfile and "multinode/stackbuild-sshd" not in files
        assert "multinode" not in [c.name for c in plan.checks]
        return
    text = context.dockerfile
    # after torch (shared), before the stack's own apt packages and its compiled ops
    torch_at = text.index("lock/2-torch.txt /opt/stackbuild/lock/")
    layer_at = text.index("COPY multinode/ /opt/stackbuild/multinode/")
    assert torch_at < layer_at < text.index("# The remaining pins")
    if plan.stack_apt:
        assert layer_at < text.index("# The stack's own system libraries")
    for name in MULTINODE_APT:
        assert f"      {name} \\\n" in text
    # host keys never in a layer; the start script, the NCCL defaults and ssh's settings are
    assert "rm -f /etc/ssh/ssh_host_*" in text
    assert {"multinode/stackbuild-sshd", "multinode/nccl.conf", "multinode/ssh_config"} <= set(files)
    assert "multinode" in [c.name for c in plan.checks]
    assert plan.manifest()["multinode"] is True


def test_the_multinode_layer_is_shared_by_every_stack_of_a_release_family():
    """Same base, Python and torch lock: the Dockerfiles agree up to and including the multinode layer."""
    heads = set()
    for name in ("alpaca-lora", "deepspeed-zero3-offload", "flash-attn-fsdp", "qlora"):
        text = render_context(plan_build(load_stack(name), "2026.11", "cpu")).dockerfile
        end = text.index("ENV PDSH_RCMD_TYPE=ssh")
        heads.add(text[text.index("FROM "):end])
    assert len(heads) == 1


def test_nccl_defaults_are_documented_variables():
    lines = [line for line in (templates_dir() / "context" / "multinode" / "nccl.conf").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all(line.startswith("NCCL_") and "=" in line for line in lines)


@pytest.mark.parametrize("args,expected", [
    (["--port", "x22"], "--port 'x22' is not a port number"),
    (["--port", "70000"], "--port '70000' is not a port number"),
    (["--port"], "--port needs a value"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_sshd_start_script_refuses_bad_arguments(args, expected):
    proc = subprocess.run(["sh", str(SSHD), *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert expected in proc.stderr


def test_sshd_start_script_help():
    proc = subprocess.run(["sh", str(SSHD), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--keys DIR" in proc.stdout and "--foreground" in proc.stdout
