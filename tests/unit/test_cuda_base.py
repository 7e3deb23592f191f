"""The cuda target's base: Debian slim with CUDA from the wheels torch depends on, or nvidia/cuda.

A slim base carries one CUDA (torch's own wheels); where it compiles CUDA code it installs the
compiler wheels of the same toolkit release and lays them out as a CUDA_HOME. nvidia/cuda devel
bases stay available (the releases whose CUDA has no compiler on PyPI use them).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from builder.profile import targets
from builder.profile import versions as compat
from builder.plan.build_plan import lock_inputs, plan_build, plan_for
from builder.profile.load import load_stack
from builder.render.dockerfile import render_context, render_dockerfile

# A 2026.12-like release: torch 2.15 (CUDA 13.2 wheels), compiling one DeepSpeed op on a slim cuda base.
CUDA13 = """\
name: cu13
title: CUDA 13 from wheels
description: >-
  Used by the tests.
default_release: "2026.12"
releases:
  "2026.12":
    summary: torch 2.15 on CUDA 13.2 wheels
    date: "2026-12-05"
    torch: "2.15.0"
    cuda: "13.2"
    bootstrap:
      - pip==25.3
    targets:
      cuda:
        base: debian:bookworm-slim
        python: "3.11"
        arch_list: ["9.0"]
      cpu:
        base: debian:bookworm-slim
        python: "3.11"
    compiled:
      - package: deepspeed==0.18.9
        why: offload ops
        targets: [cuda]
        requires:
          - ninja==1.13.0
        no_build_isolation: true
        env:
          cuda:
            DS_ACCELERATOR: cuda
            DS_BUILD_FUSED_ADAM: "1"
    packages:
      - transformers==5.14.1
"""


@pytest.fixture
def cu13(tmp_path, monkeypatch):
    (tmp_path / "cu13.yaml").write_text(CUDA13)
    monkeypatch.chdir(tmp_path)
    return "./cu13.yaml"


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_current_stacks_that_compile_nothing_take_cuda_from_torchs_wheels():
    for name in ("qlora", "alpaca-lora"):
        plan = plan_build(load_stack(name), "2026.11", "cuda")
        text = render_dockerfile(plan)
        assert text.splitlines()[6] == "FROM debian:bookworm-slim"
        assert "nvidia/cuda" not in text and "nvcc" not in text and "CUDA_HOME" not in text
        assert plan.toolkit == () and plan.toolkit_home is None
        # what a container runtime reads to hand the container its GPUs, as NVIDIA's images say it
        assert ("NVIDIA_VISIBLE_DEVICES", "all") in plan.runtime_env
        assert ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility") in plan.runtime_env
        # torch's CUDA libraries are the lock's: the nvidia-*-cu12 wheels torch 2.10 depends on
        torch_layer = {p.name for p in dict(plan.lock.groups)["torch"]}
        assert {"torch", "nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-cudnn-cu12"} <= torch_layer


def test_cuda_images_on_a_slim_base_differ_from_the_cpu_image_only_after_its_layers():
    """Every instruction before the runtime ENV is the cpu image's, and every lock file it copies: the
    cuda image adds no CUDA of its own (its lock is the cpu lock, relocked preferring its versions)."""
    for name in ("qlora", "alpaca-lora"):
        cuda = _lines(render_dockerfile(plan_build(load_stack(name), "2026.11", "cuda")))
        cpu = _lines(render_dockerfile(plan_build(load_stack(name), "2026.11", "cpu")))
        runtime = cuda.index("ENV \\")
        assert cuda[runtime + 1:runtime + 3] == ['    NVIDIA_DRIVER_CAPABILITIES="compute,utility" \\',
                                                 '    NVIDIA_VISIBLE_DEVICES="all"']
        assert "ENV \\" not in cpu
        start = next(i for i, line in enumerate(cuda) if line.startswith("FROM "))
        stop = cpu.index("WORKDIR /workspace")
        assert cuda[start:runtime] + cuda[runtime + 4:runtime + 4 + stop - runtime] == cpu[start:stop]
        files = {plan.target.name: dict(render_context(plan).files) for plan in
                 (plan_build(load_stack(name), "2026.11", t) for t in ("cuda", "cpu"))}
        locks = sorted(k for k in files["cpu"] if k.startswith("lock/"))
        assert locks and [files["cuda"][k] for k in locks] == [files["cpu"][k] for k in locks]


def test_stacks_that_compile_on_cuda_12_keep_nvidias_toolkit():
    for name in ("deepspeed-zero3-offload", "flash-attn-fsdp"):
        plan = plan_build(load_stack(name), "2026.11", "cuda")
        assert plan.target.base.ref == "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04"
        assert plan.toolkit == () and plan.runtime_env == ()


def test_a_cuda_13_release_compiles_with_the_toolkit_wheels_as_cuda_home(cu13):
    plan = plan_for(cu13, None, "cuda")
    # the compiler of torch's CUDA series; the lock holds it at the release torch itself depends on
    # (torch 2.15.0: cuda-toolkit==13.2.2), hashed like every other package
    assert plan.toolkit == ("cuda-toolkit[cccl,crt,nvcc,nvvm]==13.2.*",)
    assert plan.toolkit_home == "/opt/venv/lib/python3.11/site-packages/nvidia/cu13"
    assert ("toolkit", plan.toolkit) in lock_inputs(plan).groups
    lines = _lines(render_dockerfile(plan))
    text = "\n".join(lines)
    assert "FROM debian:bookworm-slim" in lines
    # unlocked, torch is named beside it: the resolver holds the toolkit at the release torch depends on
    install = _index(lines, "pip install -c /opt/stackbuild/held.txt torch==2.15.0 'cuda-toolkit[cccl,crt,nvcc,nvvm]==13.2.*'")
    home = _index(lines, "ln -s /opt/venv/lib/python3.11/site-packages/nvidia/cu13 /usr/local/cuda")
    env = lines.index("ENV CUDA_HOME=/usr/local/cuda \\")
    torch = _index(lines, "pip install -c /opt/stackbuild/held.txt torch==2.15.0 \\")
    deepspeed = _index(lines, "deepspeed==0.18.9")
    assert torch < install < home < env < deepspeed
    assert "ln -s lib /usr/local/cuda/lib64" in text  # nvcc.profile's -L, DeepSpeed's CUDA_HOME/lib64
    assert "/usr/local/cuda/bin/nvcc --version" in text
    assert 'name="${lib%%.so.*}.so"' in text  # -lcudart finds libcudart.so -> libcudart.so.13
    assert "    PATH=/usr/local/cuda/bin:$PATH" in lines
    assert "TORCH_CUDA_ARCH_LIST=9.0" in text


def test_a_cuda_13_release_compiles_nothing_on_its_cpu_target(cu13):
    plan = plan_for(cu13, None, "cpu")
    assert plan.toolkit == () and "nvcc" not in render_dockerfile(plan)


def test_the_compiler_comes_only_where_code_is_compiled(cu13):
    text = Path("cu13.yaml").read_text()
    compiled = text[text.index("    compiled:"):text.index("    packages:")]
    Path("cu13.yaml").write_text(text.replace(compiled, "").replace('        arch_list: ["9.0"]\n', ""))
    plan = plan_for(cu13, None, "cuda")
    assert plan.toolkit == () and "CUDA_HOME" not in render_dockerfile(plan)


def test_the_cpu_target_has_no_wheel_base_rule():
    cpu = targets.target("cpu")
    base = compat.parse_base_image("debian:bookworm-slim")
    assert cpu.toolkit_requirements(base, True, "") == () and cpu.runtime_env(base) == ()


def test_the_toolkit_layout_is_the_accelerator_entrys_data(cu13, monkeypatch):
    """Root, links, compiler, home variable and requirement come from the entry's wheel_toolkit."""
    import dataclasses

    from builder.profile import accelerators

    cuda = accelerators.ACCELERATORS["cuda"]
    other = dataclasses.replace(cuda.wheel_toolkit, root="/opt/toolkit", home_variable="TOOLKIT_ROOT",
                                links=(("lib64", "lib"), ("targets/x86_64-linux", ".")), extras=("nvcc",))
    monkeypatch.setitem(accelerators.ACCELERATORS, "cuda", dataclasses.replace(cuda, wheel_toolkit=other))
    plan = plan_for(cu13, None, "cuda")
    text = render_dockerfile(plan)
    assert plan.toolkit == ("cuda-toolkit[nvcc]==13.2.*",)
    assert "ln -s /opt/venv/lib/python3.11/site-packages/nvidia/cu13 /opt/toolkit" in text
    assert "ln -s . /opt/toolkit/targets/x86_64-linux" in text and "ln -s lib /opt/toolkit/lib64" in text
    assert "ENV TOOLKIT_ROOT=/opt/toolkit" in text and "PATH=/opt/toolkit/bin:$PATH" in text
    assert "/usr/local/cuda" not in text and "CUDA_HOME" not in text
    # the first CUDA with compiler wheels is data too: below it a compiling slim release is refused
    monkeypatch.setitem(accelerators.ACCELERATORS, "cuda", dataclasses.replace(
        cuda, wheel_toolkit=dataclasses.replace(other, since=(13, 3))))
    with pytest.raises(Exception) as caught:
        plan_for(cu13, None, "cuda")
    assert "PyPI has none for CUDA 13.2" in str(caught.value) and "needs CUDA >= 13.3" in str(caught.value)


def _index(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)
