"""A second accelerator is data: a ROCm-like accelerator entry, a target entry pointing at it and its
version rows render a profile with no module changed (README, Development: what an accelerator touches).

The entries are registered for one test only (monkeypatch puts the tables back).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.engine.api import GpuRequest
from builder.errors import ProfileError
from builder.plan.build_plan import plan_build
from builder.profile import accelerators, targets
from builder.profile.load import load_stack
from builder.render.dockerfile import render_context

FIXTURE = Path(__file__).parent / "fixtures" / "accelerator" / "rocmlike.yaml"

# The data a ROCm-like accelerator is: its version field, its version rows (torch 2.5 is built for
# ROCm 6.1 and 6.2 on the torch index, PyPI's plain wheel is none of them), its wheel tag and index,
# its base image rule, its archs, its device request and nodes, and its host commands.
ROCM = accelerators.Accelerator(
    "rocm", label="ROCm", version_field="rocm",
    builds={"2.5": (("6.1", "6.2"), None)},
    wheel_tag="+rocm{version}", index_url="https://download.pytorch.org/whl/rocm{version}",
    base_pattern=r"^rocm/dev-ubuntu-(?P<rel>\d+\.\d+):(?P<version>\d+\.\d+)\.\d+-(?P<flavour>complete|devel)\Z",
    base_distro="ubuntu", base_name="a rocm/dev-ubuntu base",
    base_fix="use rocm/dev-ubuntu-22.04:{version}.<patch>-complete",
    compiler="hipcc", arch_min={"9.0": (6, 0)}, compiler_flavours=("complete", "devel"),
    device_capabilities=("rocm",), device_nodes=("/dev/kfd", "/dev/dri/renderD*"),
    vendor="AMD", host_tool=("rocm-smi", "--showproductname", "--csv"), host_runtime="rocm",
    host_runtime_needs="ROCm container runtime", host_runtime_fix="register the ROCm container runtime with the engine",
)
ROCM_TARGET = targets.Target("rocm", gpu=True, accelerator="rocm", base_distro=None, base_fix="",
                             image_size=30 * targets.GIB)


@pytest.fixture
def rocm(monkeypatch):
    monkeypatch.setitem(accelerators.ACCELERATORS, "rocm", ROCM)
    monkeypatch.setitem(targets.TARGETS, "rocm", ROCM_TARGET)
    return ROCM_TARGET


def test_a_second_accelerator_renders_its_profile_from_data_alone(rocm):
    stack = load_stack(str(FIXTURE))
    release = stack.release(None)
    assert release.accelerator_versions == {"cuda": "12.4", "rocm": "6.2"}
    plan = plan_build(stack, "2024.10", "rocm", (), with_lock=False)
    assert plan.target.torch.requirement == "torch==2.5.1+rocm6.2"
    assert plan.target.torch_index == "https://download.pytorch.org/whl/rocm6.2"
    dockerfile = render_context(plan).dockerfile
    assert "FROM rocm/dev-ubuntu-22.04:6.2.4-complete" in dockerfile
    assert "torch==2.5.1+rocm6.2" in dockerfile
    assert "https://download.pytorch.org/whl/rocm6.2" in dockerfile
    assert "(its ROCm 6.2 build)" in dockerfile
    # its containers ask for the accelerator's capabilities; the cpu target of the same release is unchanged
    assert GpuRequest.of(targets.gpu_devices("rocm", None), rocm.gpu_capabilities).capabilities == ("rocm",)
    cpu = render_context(plan_build(stack, "2024.10", "cpu", (), with_lock=False)).dockerfile
    assert "FROM debian:bookworm-slim" in cpu and "+rocm" not in cpu


def test_the_second_accelerators_rules_come_from_its_entry(rocm, tmp_path):
    """Its version rows, base rule and version field are checked like CUDA's, with its own words."""
    text = FIXTURE.read_text()
    cases = [  # (what the fixture says, what a broken copy says instead, the problem reported)
        ('rocm: "6.2"', 'rocm: "6.0"', "torch 2.5.1 has no ROCm 6.0 build"),
        ("6.2.4-complete", "6.1.3-complete", "base image ROCm 6.1 does not match the release's ROCm 6.2"),
        ("6.2.4-complete", "6.2.4-runtime", "unknown base image"),
        ("rocm/dev-ubuntu-22.04:6.2.4-complete", "nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04",
         "the rocm target needs a rocm/dev-ubuntu base"),
        ('    rocm: "6.2"\n', "", "the rocm target needs the release's 'rocm' version"),
    ]
    for index, (find, replace, expected) in enumerate(cases):
        broken = tmp_path / f"rocmlike-{index}.yaml"
        broken.write_text(text.replace(find, replace, 1))
        with pytest.raises(ProfileError) as caught:
            load_stack(str(broken))
        assert expected in str(caught.value), (find, str(caught.value))


def test_without_the_entry_the_profile_is_refused(tmp_path):
    """Not registered, 'rocm' is neither a target nor a release field: the table is what admits it."""
    with pytest.raises(ProfileError) as caught:
        load_stack(str(FIXTURE))
    assert "rocm" in str(caught.value)


def test_doctor_asks_the_targets_accelerator_for_its_host_checks(rocm):
    """The host tool's arguments and the runtime doctor looks for are the entry's."""
    from builder.doctor.diagnose import EngineInfo, check_host

    asked = []

    def tool(args):
        asked.append(args)
        return "Fixture GPU, 9.0, 6.2.0\n"

    checks = check_host(None, target="rocm", nvidia_smi=tool, ip_addr=lambda: "",
                        engine_probe=lambda: EngineInfo("27.0", "unix:///fixture", ("runc", "rocm")))
    assert asked == [["--showproductname", "--csv"]]
    runtime = next(c for c in checks if c.name.endswith("-runtime"))
    assert (runtime.name, runtime.status) == ("rocm-runtime", "ok")


def test_the_smoke_runners_gpu_probe_is_the_cuda_entrys_device_nodes():
    """What "a GPU is visible" means to the in-image runner is the cuda entry's device_nodes.

    The runner (templates/context/smoke/run.py) is a context file, so rendering the nodes into it or
    the manifest would change every cuda image's content hash; this keeps the two from drifting apart.
    """
    import re

    runner = (Path(__file__).parents[2] / "templates" / "context" / "smoke" / "run.py").read_text()
    body = runner[runner.index("def gpu_visible"):].split("\n\n")[0]
    assert tuple(re.findall(r'"(/dev/[^"]+)"', body)) == accelerators.ACCELERATORS["cuda"].device_nodes
