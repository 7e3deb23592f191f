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
SITE = "/opt/venv/lib/python3.11/site-packages"


def _current_cuda() -> dict[tuple[str, str], tuple[str, bool]]:
    """(stack, default release) -> (its cuda base, whether it compiles CUDA code), for every stack."""
    out = {}
    for name in available_stacks():
        stack = load_stack(name)
        release = stack.release(None)
        if "cuda" in release.targets:
            plan = plan_build(stack, release.name, "cuda", with_lock=False)
            out[name, release.name] = (release.targets["cuda"].base.ref, bool(plan.compiled))
    return out


CURRENT = _current_cuda()
# built here, in CI: a slim base (CUDA from torch's wheels) and nothing compiled
SLIM = sorted(key for key, (base, compiles) in CURRENT.items() if base.startswith("debian:") and not compiles)
# a slim base with the cuda-toolkit wheels as CUDA_HOME: their op sets and arch lists do not fit CI's 2 cores
# (README, One CUDA per image), so CI does not build them
COMPILING = sorted(key for key, (base, compiles) in CURRENT.items() if base.startswith("debian:") and compiles)
# compiled on torch 2.10's CUDA 12.8, which has no nvcc on PyPI: NVIDIA's toolkit (README, One CUDA per image)
NVIDIA_ONLY = {("deepspeed-zero3-offload", "2026.11"), ("flash-attn-fsdp", "2026.11")}
# checks that run on a cpu image but on a cuda image prove only on a GPU, and say so without one
NEEDS_A_GPU = {"bitsandbytes-cuda"}


def test_every_current_cuda_target_is_built_here_unless_it_compiles_or_needs_nvidias_base():
    nvidia = {key for key, (base, _) in CURRENT.items() if not base.startswith("debian:")}
    assert nvidia <= NVIDIA_ONLY, nvidia - NVIDIA_ONLY
    assert {stack for stack, _ in SLIM} == {"alpaca-lora", "qlora"}
    assert {stack for stack, _ in COMPILING} | {stack for stack, _ in nvidia} == {"deepspeed-zero3-offload",
                                                                                   "flash-attn-fsdp"}
    # those that compile on a slim base take the compiler wheels of their own torch's CUDA series
    for stack, release in COMPILING:
        plan = plan_build(load_stack(stack), release, "cuda", with_lock=False)
        version = plan.release.accelerator_version("cuda")
        assert plan.toolkit == (f"cuda-toolkit[cccl,crt,nvcc,nvvm]=={version}.*",), (stack, plan.toolkit)


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
    sonames = {lib["soname"] for lib in found["libraries"]}
    major = {lib["soname"] for lib in found["libraries"] if lib["soname"].startswith("libcudart.so.")}
    assert len(major) == 1 and {"libcublas.so." + major.pop().rsplit(".", 1)[1], "libcudnn.so.9", "libnccl.so.2"} <= sonames
    # no CUDA library stored twice: triton's bundled CUPTI copies (on torch 2.10 byte for byte the
    # nvidia-cuda-cupti-cu12 wheel's files, libcupti under three names) are links the torch layer made
    # (cuda_dedupe.py); every other CUDA library file is one of torch's nvidia-* wheels
    assert found["copies"] == {} and found["copy_bytes"] == 0, found["copies"]
    others = [lib["path"] for lib in found["libraries"] if "/site-packages/nvidia/" not in lib["path"]]
    assert all(f"{SITE}/triton/backends/nvidia/lib/" in path for path in others), others
    # a soname in two versions only where triton ships its own CUPTI build for its profiler (torch 2.15's
    # triton 3.9: CUPTI 2025.1.1 and 2026.2.0 beside the 13.2 wheel); torch 2.10's triton 3.6 has none
    for name, paths in found["versions"].items():
        assert [p for p in paths if f"{SITE}/triton/" not in p] == [p for p in paths if "/site-packages/nvidia/" in p], paths
    if release == "2026.11":
        assert found["versions"] == {} and found["duplicate_bytes"] == 0, found["duplicates"]
        links = client_run(docker_client, image, "import os, glob; d = glob.glob('" + SITE + "/triton/backends/"
                           "nvidia/lib/cupti/libcupti.so*'); print(len(d), all(os.path.islink(p) and "
                           "'/nvidia/cuda_cupti/lib/' in os.path.realpath(p) for p in d))")
        assert links.split() == ["3", "True"], links
    config = docker_client.images.get(image).attrs["Config"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in config["Env"]
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in config["Env"]
    assert not any(e.startswith("CUDA_HOME=") for e in config["Env"])  # nothing here compiles CUDA code


def client_run(client: docker.DockerClient, image: str, code: str) -> str:
    """``python -c code`` in a network-less container of ``image``, removed after; its stdout."""
    return client.containers.run(image, ["python", "-c", code], network_disabled=True, remove=True,
                                 labels={TEST_LABEL: "1"}).decode()


def test_a_second_copy_of_a_cuda_library_is_found(cuda_images, docker_client, derived_image):
    """The scan can fail: another build of libcudart (a copy with one byte more) beside torch's is a
    second version of the library, reported with its bytes."""
    image = cuda_images(*SLIM[0]).ref.immutable
    major = int(load_stack(SLIM[0][0]).release(SLIM[0][1]).accelerator_version("cuda").split(".")[0])
    # where torch's wheels put libcudart: nvidia/cuda_runtime/lib (CUDA 12), nvidia/cu13/lib (CUDA 13)
    runtime = "cuda_runtime" if major == 12 else f"cu{major}"
    soname, copy = f"libcudart.so.{major}", f"/usr/local/cuda/lib64/libcudart.so.{major}.0.99"
    scanned = _scan(docker_client, image)
    before = scanned["versions"]  # triton's own CUPTI builds on torch 2.15 (see above)
    broken = derived_image(image, [
        f"mkdir -p /usr/local/cuda/lib64 && cp {SITE}/nvidia/{runtime}/lib/{soname} {copy}",
        f"printf x >> {copy}"])
    found = _scan(docker_client, broken)
    assert set(found["versions"]) - set(before) == {soname}, found["versions"]
    assert copy in found["versions"][soname]
    assert found["version_bytes"] > scanned["version_bytes"] + 100_000


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

