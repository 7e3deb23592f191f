"""The torch layer's link of bundled CUDA library copies (templates/context/cuda_dedupe.py).

triton 3 ships CUPTI for its profiler under triton/backends/nvidia/lib; on torch 2.10 those files
are byte for byte the nvidia-cuda-cupti-cu12 wheel's, and libcupti is there under three names.
The script links every byte-identical copy to one file and leaves a different build alone; the
render runs it where the lock's [torch] section pins a package the accelerator entry names.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from builder.plan.build_plan import plan_build
from builder.profile.load import load_stack
from builder.render.dockerfile import render_context

SCRIPT = Path(__file__).parents[2] / "templates" / "context" / "cuda_dedupe.py"


def _script():
    spec = importlib.util.spec_from_file_location("cuda_dedupe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site-packages"
    wheel = site / "nvidia" / "cuda_cupti" / "lib"
    bundled = site / "triton" / "backends" / "nvidia" / "lib" / "cupti"
    blackwell = site / "triton" / "backends" / "nvidia" / "lib" / "cupti-blackwell"
    for folder in (wheel, bundled, blackwell):
        folder.mkdir(parents=True)
    (wheel / "libcupti.so.12").write_bytes(b"cupti 12.8" * 1000)
    (wheel / "libnvperf_host.so").write_bytes(b"nvperf 12.8" * 1000)
    for name in ("libcupti.so", "libcupti.so.12", "libcupti.so.2025.1.1"):
        (bundled / name).write_bytes(b"cupti 12.8" * 1000)
    (bundled / "libnvperf_host.so").write_bytes(b"nvperf 12.8" * 1000)
    (bundled / "README").write_bytes(b"cupti 12.8" * 1000)  # not a library: never touched
    for name in ("libcupti.so", "libcupti.so.13"):
        (blackwell / name).write_bytes(b"cupti 13.1" * 1000)  # triton's own build of another release
    (blackwell / "libnvperf_host.so").write_bytes(b"nvperf 13.1" * 1000)
    return site


def test_identical_copies_become_links_and_other_builds_stay(tmp_path, capsys):
    site = _site(tmp_path)
    assert _script().main([str(site), "triton/backends/nvidia/lib=nvidia"]) == 0
    bundled = site / "triton" / "backends" / "nvidia" / "lib"
    wheel = site / "nvidia" / "cuda_cupti" / "lib"
    for name in ("libcupti.so", "libcupti.so.12", "libcupti.so.2025.1.1"):
        path = bundled / "cupti" / name
        assert path.is_symlink() and path.resolve() == (wheel / "libcupti.so.12").resolve()
        assert not os.path.isabs(os.readlink(path))  # relative: the layer's paths, wherever it is mounted
    assert (bundled / "cupti" / "libnvperf_host.so").resolve() == (wheel / "libnvperf_host.so").resolve()
    assert not (bundled / "cupti" / "README").is_symlink()
    # the other release's build is kept once: its second name links to its first, never to 12.8
    blackwell = bundled / "cupti-blackwell"
    assert not (blackwell / "libcupti.so").is_symlink() and (blackwell / "libcupti.so").read_bytes() == b"cupti 13.1" * 1000
    assert (blackwell / "libcupti.so.13").resolve() == (blackwell / "libcupti.so").resolve()
    assert not (blackwell / "libnvperf_host.so").is_symlink()
    out = capsys.readouterr().out
    assert "5 copies linked, 51000 bytes saved" in out
    # a second run finds nothing left to link
    assert _script().main([str(site), "triton/backends/nvidia/lib=nvidia"]) == 0
    assert "0 copies linked" in capsys.readouterr().out


def test_a_link_that_does_not_resolve_to_the_same_bytes_fails_the_build(tmp_path, monkeypatch, capsys):
    site = _site(tmp_path)
    script = _script()
    real = script.os.symlink
    monkeypatch.setattr(script.os, "symlink", lambda target, path: real("libnvperf_host.so", path))
    assert script.main([str(site), "triton/backends/nvidia/lib=nvidia"]) == 1
    assert "does not resolve to the same bytes" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert _script().main([]) == 2
    assert _script().main(["/site", "no-equals-sign"]) == 2
    assert "usage: cuda_dedupe.py" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["qlora", "alpaca-lora", "deepspeed-zero3-offload", "flash-attn-fsdp"])
def test_the_torch_layer_links_triton_3s_copies_on_every_target(name):
    """2026.11 locks triton 3.6.0: both targets run the script in the same torch layer (still shared)."""
    stack = load_stack(name)
    for target in ("cpu", "cuda"):
        plan = plan_build(stack, "2026.11", target)
        assert plan.bundled_copies == (("triton/backends/nvidia/lib", "nvidia"),)
        context = render_context(plan)
        assert "cuda_dedupe.py" in dict(context.files)
        assert (f"/opt/venv/bin/python /opt/stackbuild/cuda_dedupe.py /opt/venv/lib/python{plan.target.python}"
                "/site-packages triton/backends/nvidia/lib=nvidia") in context.dockerfile
        assert plan.manifest()["bundled_copies_linked"] == ["triton/backends/nvidia/lib"]


@pytest.mark.parametrize("name,release", [("qlora", "2023.07"), ("alpaca-lora", "2023.04"),
                                          ("deepspeed-zero3-offload", "2023.06")])
def test_era_releases_whose_triton_bundles_no_cuda_keep_their_layer(name, release):
    plan = plan_build(load_stack(name), release, "cpu")
    assert plan.bundled_copies == ()
    context = render_context(plan)
    assert "cuda_dedupe" not in context.dockerfile and "cuda_dedupe.py" not in dict(context.files)
