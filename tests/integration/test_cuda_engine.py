"""The current cuda images that build here (CUDA from torch's wheels on a Debian slim base), built
for real, proven on a host without a GPU, and shown to carry one CUDA.

The cuda targets on an nvidia/cuda base cannot be built here (no Docker Hub): which those are is
fixed below and checked against the profiles, so a stack that moves to a slim base joins these
tests and one that moves away is noticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from builder.smoke.checks import CHECKS
from builder.plan.build_plan import plan_build
from builder.profile.load import available_stacks, load_stack
from builder.smoke.run import run_smoke

from .conftest import TEST_LABEL

CUDA_LIBS = Path(__file__).parents[2] / "bench" / "cuda_libs.py"


def _current_cuda() -> dict[tuple[str, str], str]:
    """(stack, default release) -> its cuda base, for every stack."""
    out = {}
    for name in available_stacks():
        stack = load_stack(name)
        release = stack.release(None)
        if "cuda" in release.targets:
            out[name, release.name] = release.targets["cuda"].base.ref
    return out


CURRENT = _current_cuda()
SLIM = sorted(key for key, base in CURRENT.items() if base.startswith("debian:"))
# compiled on torch 2.10's CUDA 12.8, which has no nvcc on PyPI: NVIDIA's toolkit (README, One CUDA per image)
NVIDIA_ONLY = {("deepspeed-zero3-offload", "2026.11"), ("flash-attn-fsdp", "2026.11")}
# checks that run on a cpu image but on a cuda image prove only on a GPU, and say so without one
NEEDS_A_GPU = {"bitsandbytes-cuda"}


def test_every_current_cuda_target_is_built_here_unless_it_needs_nvidias_base():
    assert set(CURRENT) - set(SLIM) == NVIDIA_ONLY
    assert SLIM == [("alpaca-lora", "2026.11"), ("qlora", "2026.11")]


def _scan(client: docker.DockerClient, image: str) -> dict:
    """bench/cuda_libs.py run inside ``image``, offline: its CUDA libraries by soname."""
    output = client.containers.run(image, ["python", "-c", CUDA_LIBS.read_text()], network_disabled=True,
                                   remove=True, labels={TEST_LABEL: "1"}, stderr=True)
    return json.loads(output)


@pytest.mark.parametrize(("stack", "release"), SLIM, ids=[f"{s}@{r}" for s, r in SLIM])
def test_the_cuda_image_passes_every_check_a_host_without_a_gpu_can_run(stack, release, cuda_images, engine,
                                                                        docker_client):
    image = cuda_images(stack, release).ref.immutable
    report = run_smoke(engine, image)
    results = {r.check: r for r in report.results}
    assert list(results) == [c["name"] for c in plan_build(load_stack(stack), release, "cuda").manifest()["checks"]]
    assert report.ok, [r for r in report.results if r.status == "fail"]
    for name, result in results.items():
        if CHECKS[name].gpu or name in NEEDS_A_GPU:
            assert result.status == "skip" and "no GPU" in result.detail, result
        elif name == "shm":
            assert result.status == "warn", result  # Docker's default 64 MB /dev/shm
        else:
            assert result.status == "pass", result


@pytest.mark.parametrize(("stack", "release"), SLIM, ids=[f"{s}@{r}" for s, r in SLIM])
def test_the_cuda_image_carries_one_cuda_torchs_wheels(stack, release, cuda_images, docker_client):
    image = cuda_images(stack, release).ref.immutable
    found = _scan(docker_client, image)
    # one version of every CUDA library: no soname in two files that differ
    assert found["versions"] == {} and found["version_bytes"] == 0, found["versions"]
    sonames = {lib["soname"] for lib in found["libraries"]}
    assert {"libcudart.so.12", "libcublas.so.12", "libcudnn.so.9", "libnccl.so.2"} <= sonames
    # every CUDA library is one of torch's nvidia-* wheels, none from the OS or a toolkit; the only
    # copies are triton's bundled CUPTI, byte for byte the nvidia-cuda-cupti-cu12 wheel's files
    wheels = [lib["path"] for lib in found["libraries"] if "/site-packages/nvidia/" not in lib["path"]]
    assert all("/site-packages/triton/backends/nvidia/lib/cupti/" in path for path in wheels), wheels
    assert all(any("/site-packages/nvidia/cuda_cupti/" in p for p in paths) for paths in found["duplicates"].values())
    config = docker_client.images.get(image).attrs["Config"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in config["Env"]
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in config["Env"]
    assert not any(e.startswith("CUDA_HOME=") for e in config["Env"])  # nothing here compiles CUDA code


def test_a_second_copy_of_a_cuda_library_is_found(cuda_images, docker_client, derived_image):
    """The scan can fail: another build of libcudart (a copy with one byte more) beside torch's is a
    second version of the library, reported with its bytes."""
    image = cuda_images(*SLIM[0]).ref.immutable
    broken = derived_image(image, [
        "mkdir -p /usr/local/cuda/lib64 && cp /opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib/"
        "libcudart.so.12 /usr/local/cuda/lib64/libcudart.so.12.8.90",
        "printf x >> /usr/local/cuda/lib64/libcudart.so.12.8.90"])
    found = _scan(docker_client, broken)
    assert list(found["versions"]) == ["libcudart.so.12"], found["versions"]
    assert "/usr/local/cuda/lib64/libcudart.so.12.8.90" in found["versions"]["libcudart.so.12"]
    assert found["version_bytes"] > 100_000


@pytest.mark.parametrize(("stack", "release"), SLIM, ids=[f"{s}@{r}" for s, r in SLIM])
def test_the_cuda_image_is_the_cpu_images_layers(stack, release, cuda_images, stack_images, docker_client):
    """The slim cuda image adds no CUDA of its own, nor anything else: the same lock and instructions as
    its cpu twin, so the same layers (on one engine, the second build of the two is all cache hits) up
    to stackbuild's manifest (target and accelerator differ) and the ENV (NVIDIA_*) and labels."""
    cuda = docker_client.images.get(cuda_images(stack, release).ref.immutable).attrs
    cpu = docker_client.images.get(stack_images(stack, release).ref.immutable).attrs
    ours, theirs = cuda["RootFS"]["Layers"], cpu["RootFS"]["Layers"]
    first = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    assert len(ours) == len(theirs) and first >= len(ours) - 2, (first, len(ours))  # the manifest's COPY on
    assert abs(cuda["Size"] - cpu["Size"]) < 100_000, (cuda["Size"], cpu["Size"])
    assert {e for e in cuda["Config"]["Env"] if e not in cpu["Config"]["Env"]} == {
        "NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"}
