"""A second accelerator is data: a ROCm-like accelerator entry, a target entry pointing at it and its
version rows render a profile with no module changed (README, Development: what an accelerator touches).

The entries are registered for one test only (monkeypatch puts the tables back).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.engine.api import GpuRequest
from builder.errors import ProfileError
from builder.plan.build_plan import plan_build
from builder.profile import accelerators, targets
from builder.profile.load import available_stacks, load_stack
from builder.render.dockerfile import render_context
from builder.safety.paths import templates_dir

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
    min_driver={"6.2": "6.8.5"}, driver_floor={"6": "6.7.0"}, k8s_resource="amd.com/gpu",
    base_hint="rocm/dev-ubuntu-22.04:<X.Y.Z>-complete",
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
    assert release.accelerator_versions == {"rocm": "6.2"}
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


def _runner(monkeypatch, devices):
    """The in-image runner (templates/context/smoke/run.py) as a module, seeing ``devices`` as the device nodes."""
    import fnmatch
    import importlib.util

    spec = importlib.util.spec_from_file_location("stackbuild_smoke_runner", templates_dir() / "context" / "smoke" / "run.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    monkeypatch.setattr(runner.glob, "glob", lambda pattern: fnmatch.filter(devices, pattern))
    return runner


def _manifest(stack, release, target) -> dict:
    return json.loads(dict(render_context(plan_build(stack, release, target, (), with_lock=False)).files)["manifest.json"])


def test_the_image_bakes_its_accelerators_device_nodes_and_the_runner_honours_them(rocm, monkeypatch):
    """What "a GPU is visible" means to the in-image runner started by hand (no --isolated) is the manifest's
    device_nodes, written from the target's accelerator entry: the ROCm-like image names /dev/kfd, a cuda image
    NVIDIA's nodes as before, a cpu image none."""
    fixture = load_stack(str(FIXTURE))
    shipped = load_stack("alpaca-lora")
    rocm_manifest = _manifest(fixture, "2024.10", "rocm")
    cuda_manifest = _manifest(shipped, shipped.default_release, "cuda")
    cpu_manifest = _manifest(fixture, "2024.10", "cpu")
    assert rocm_manifest["device_nodes"] == ["/dev/kfd", "/dev/dri/renderD*"]
    assert cuda_manifest["device_nodes"] == ["/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/dxg"]
    assert cpu_manifest["device_nodes"] == []
    seen = {}
    for host, devices in {"amd": ["/dev/kfd", "/dev/dri/renderD128"], "nvidia": ["/dev/nvidia0"],
                          "nvidia-ctl": ["/dev/nvidiactl"], "wsl": ["/dev/dxg"], "none": ["/dev/null"]}.items():
        runner = _runner(monkeypatch, devices)
        seen[host] = [runner.gpu_visible(m) for m in (rocm_manifest, cuda_manifest, cpu_manifest)]
    assert seen == {"amd": [True, False, False], "nvidia": [False, True, False], "nvidia-ctl": [False, True, False],
                    "wsl": [False, True, False], "none": [False, False, False]}


def test_a_release_carries_only_the_version_fields_of_its_targets_accelerators(rocm, tmp_path):
    """The fixture has no cuda: at all; a release of cpu alone needs no accelerator field; a field not registered
    is refused like any unknown key."""
    assert "cuda:" not in FIXTURE.read_text()
    (tmp_path / "cpu").mkdir()
    cpu_only = tmp_path / "cpu" / FIXTURE.name
    text = FIXTURE.read_text()
    cpu_only.write_text(text.replace('    rocm: "6.2"\n', "").replace(
        text[text.index("      rocm:\n"):text.index("      cpu:\n")], ""))
    release = load_stack(str(cpu_only)).release(None)
    assert list(release.targets) == ["cpu"] and release.accelerator_versions == {}
    unknown = tmp_path / FIXTURE.name
    unknown.write_text(text.replace('    rocm: "6.2"\n', '    rocm: "6.2"\n    metal: "3.1"\n'))
    with pytest.raises(ProfileError) as caught:
        load_stack(str(unknown))
    assert "releases.2024.10.metal" in str(caught.value)


def test_the_schemas_accelerator_version_fields_are_the_registrys(rocm, monkeypatch):
    """Each registered accelerator's field is a release property after torch (the fixture's rocm too, not
    required); the default target's accelerator field, cuda, is required, as every shipped release targets it."""
    from builder.cli.catalog import profile_schema

    release = profile_schema()["$defs"]["RawRelease"]
    names = list(release["properties"])
    assert names[names.index("torch") + 1:names.index("torch") + 3] == ["cuda", "rocm"]
    assert release["properties"]["rocm"] == {"title": "Rocm", "type": "string"}
    assert "rocm" not in release["required"] and "cuda" in release["required"]
    monkeypatch.delitem(accelerators.ACCELERATORS, "rocm")
    assert "rocm" not in profile_schema()["$defs"]["RawRelease"]["properties"]
    for name in available_stacks():
        assert all(targets.DEFAULT in rel.targets for rel in load_stack(name).releases.values()), name


def test_doctors_driver_check_reads_the_entrys_driver_table(rocm):
    """The minimum driver and the compatibility floor are the entry's rows for the release's version."""
    from builder.doctor.diagnose import check_host

    stack = load_stack(str(FIXTURE))
    found = {}
    for driver in ("6.8.5", "6.7.2", "6.1.0"):
        checks = check_host(stack, "2024.10", target="rocm", nvidia_smi=lambda args, d=driver: f"Fixture GPU, 9.0, {d}\n",
                            ip_addr=lambda: "")
        found[driver] = next((c.status, c.detail) for c in checks if c.name == "driver")
    assert found["6.8.5"] == ("ok", "AMD driver 6.8.5 >= 6.8.5, the ROCm 6.2 minimum per AMD's ROCm toolkit release notes")
    assert found["6.7.2"][0] == "warn" and "within ROCm 6.x minor-version compatibility (>= 6.7.0)" in found["6.7.2"][1]
    assert found["6.1.0"] == ("fail", "AMD driver 6.1.0 is too old for ROCm 6.2 (needs 6.8.5, minimum per AMD's ROCm "
                                      "toolkit release notes)")


def test_show_the_bases_hint_and_a_k8s_job_take_the_entrys_words(rocm, tmp_path, cli):
    """show names each accelerator version by its entry's label; an unknown base lists the entry's bases; a
    Kubernetes job requests the entry's resource."""
    from builder.images.launch import JobSpec, gpu_resource_of, render_job
    from builder.render.dockerfile import prepare

    code, out, err = cli("show", f"{FIXTURE}@2024.10")
    assert code == 0 and "  date: 2024-10-30   torch 2.5.1   ROCm 6.2\n" in out, err
    broken = tmp_path / "rocmlike.yaml"
    broken.write_text(FIXTURE.read_text().replace("rocm/dev-ubuntu-22.04:6.2.4-complete", "rocm/other:6.2"))
    with pytest.raises(ProfileError) as caught:
        load_stack(str(broken))
    assert "rocm/dev-ubuntu-22.04:<X.Y.Z>-complete for rocm" in str(caught.value)
    context = prepare(str(FIXTURE), "2024.10", "rocm", [])
    assert gpu_resource_of(context) == "amd.com/gpu"
    spec = JobSpec(kind="k8s", name="demo", image="localhost:5000/rocmlike@sha256:" + "a" * 64,
                   command=("train.py",), procs_per_node=8, gpu_resource=gpu_resource_of(context))
    manifest = "".join(render_job(spec).values())
    assert "amd.com/gpu: '8'" in manifest and "nvidia.com" not in manifest


class _SmokeEngine:
    """Just enough engine for run_smoke: it records the device request and the runner's command."""

    def __init__(self):
        self.started, self.commands = [], []

    def containers(self, label):
        return []

    def start_container(self, image, name, labels, gpus, lifetime_s=None, **_):
        self.started.append(gpus)
        return name

    def exec_lines(self, container, command):
        self.commands.append(command)
        return [], lambda: 0

    def remove_container(self, container):
        pass


def test_the_smoke_run_takes_its_device_request_and_isolation_from_the_target(rocm):
    """A smoke run with GPUs asks for the target's capabilities and tells the runner to isolate every check:
    what "a GPU is visible" means comes from the host's request, not from the runner's NVIDIA device nodes."""
    from builder.smoke.run import run_smoke

    engine = _SmokeEngine()
    run_smoke(engine, "img", gpus="all", capabilities=rocm.gpu_capabilities)
    run_smoke(engine, "img", gpus="none", capabilities=rocm.gpu_capabilities)
    assert [g.capabilities if g else None for g in engine.started] == [("rocm",), None]
    assert engine.commands == [["python", "/opt/stackbuild/smoke/run.py", "--isolated"],
                               ["python", "/opt/stackbuild/smoke/run.py"]]


def test_torchs_messages_name_the_registered_accelerators_fields(rocm, tmp_path):
    """A local torch version and a torch pin in the packages are refused naming the accelerators' own fields."""
    text = FIXTURE.read_text()
    cases = [
        ('torch: "2.5.1"', 'torch: "2.5.1+rocm6.2"',
         "the CUDA build follows from 'cuda'; the ROCm build follows from 'rocm'"),
        ("      - transformers==4.46.0", "      - transformers==4.46.0\n      - torch==2.5.1",
         "torch is pinned by the release's 'torch' and 'rocm' fields"),
    ]
    for index, (find, replace, expected) in enumerate(cases):
        (tmp_path / str(index)).mkdir()
        broken = tmp_path / str(index) / FIXTURE.name
        broken.write_text(text.replace(find, replace, 1))
        with pytest.raises(ProfileError) as caught:
            load_stack(str(broken))
        assert expected in str(caught.value), str(caught.value)
