"""cuda-binaries, the GPU-less proof of an image's compiled CUDA code, against real device code.

The fixtures (tests/unit/fixtures/cuda, rebuilt by its make.sh) are shared libraries compiled by
NVIDIA's CUDA 13 nvcc from PyPI's wheels for chosen archs, with and without PTX, compressed and
not, sm_90a and sm_100f; a stand-in CUDA runtime (soname libcudart.so.99, which no CUDA install
has) and host-only libraries made by gcc. Each test lays out a site-packages folder as an image
has it (torch/lib, nvidia/cu13/lib, an extension package with its dist-info RECORD, bitsandbytes)
and runs the check file on it with this Python, as the image's runner would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.smoke.checks import CHECKS
from builder.plan.build_plan import plan_build
from builder.profile.load import load_stack
from builder.safety.paths import templates_dir

CHECK_DIR = templates_dir() / "context" / "smoke" / "checks"
FIXTURES = Path(__file__).parent / "fixtures" / "cuda"
TAG = "cpython-311-x86_64-linux-gnu"

sys.path.insert(0, str(CHECK_DIR))
import cuda_binaries  # noqa: E402  (the check file: its functions, without running it)

sys.path.remove(str(CHECK_DIR))


def _entries(name: str) -> list[tuple[str, bool]]:
    return sorted((e.name, e.compressed) for e in cuda_binaries.fatbin_entries(str(FIXTURES / name)))


def test_the_parser_reads_kind_arch_variant_and_compression_from_nvcc_output():
    # nvcc puts two cubins per arch here (the kernel's and cudart's registration code): names repeat
    assert {n for n, _ in _entries("ext_sm80.so")} == {"sm_80"}
    assert {n for n, _ in _entries("ext_sm80_sm90.so")} == {"sm_80", "sm_90"}
    # CUDA 13 compresses PTX by default (zstd), and everything with -Xfatbin -compress-all
    assert ("compute_90", True) in _entries("ext_sm80_sm90_ptx90.so")
    assert ("compute_80", False) in _entries("ext_sm80_uncompressed_ptx80.so")
    assert {n for n, _ in _entries("ext_sm80_ptx80_sm90.so")} == {"sm_80", "compute_80", "sm_90"}
    assert {n for n, _ in _entries("ext_sm90a.so")} == {"sm_90a"}
    assert {n for n, _ in _entries("ext_sm100f.so")} == {"sm_100f"}
    assert _entries("host_only.so") == []


def test_the_parser_refuses_what_is_not_a_fatbinary(tmp_path):
    data = bytearray((FIXTURES / "ext_sm80.so").read_bytes())
    with open(FIXTURES / "ext_sm80.so", "rb") as handle:
        offset, _ = cuda_binaries.elf_sections(handle)[".nv_fatbin"]
    data[offset:offset + 4] = b"\x01\x02\x03\x04"
    broken = tmp_path / "broken.so"
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="no fatbinary header"):
        cuda_binaries.fatbin_entries(str(broken))
    text = tmp_path / "text.so"
    text.write_text("INPUT(-lfoo)\n")  # a linker script named .so, as some -dev packages ship
    with pytest.raises(cuda_binaries.NotElf):
        cuda_binaries.fatbin_entries(str(text))


@pytest.mark.parametrize(("text", "archs"), [
    ("8.0;8.6;9.0", [(80, False), (86, False), (90, False)]),
    ("8.0 9.0+PTX", [(80, False), (90, True)]),
    ("80;90;100;120", [(80, False), (90, False), (100, False), (120, False)]),
    ("9.0a;10.0", [(90, False), (100, False)]),
])
def test_arch_lists_parse_in_both_spellings(text, archs):
    assert cuda_binaries.parse_arch_list(text) == archs


def _manifest(target: str = "cuda", compiled: list[dict] | None = None) -> dict:
    return {"stack": "fixture", "release": "2026.11", "target": target,
            "accelerator": "cuda" if target == "cuda" else None, "compiled": compiled or []}


def _site(tmp_path: Path, extensions: dict[str, str] | None = None, *, cuda: str | None = "13.0",
          bitsandbytes: str | None = None, extra: dict[str, str] | None = None) -> Path:
    """A site-packages folder: torch (its CUDA library and the wheels' libcudart), an extension
    package `ext` whose RECORD lists `extensions` (installed name -> fixture), bitsandbytes."""
    site = tmp_path / "site-packages"
    (site / "torch" / "lib").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("")
    (site / "torch" / "version.py").write_text(f"__version__ = '2.10.0'\ncuda: Optional[str] = {cuda!r}\n")
    if cuda:
        shutil.copy(FIXTURES / "libtorch_cuda.so", site / "torch" / "lib" / "libtorch_cuda.so")
        (site / "nvidia" / "cu13" / "lib").mkdir(parents=True)
        shutil.copy(FIXTURES / "libcudart.so.99", site / "nvidia" / "cu13" / "lib" / "libcudart.so.99")
    record = []
    for name, fixture in (extensions or {}).items():
        target = site / "ext" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, target)
        record.append(f"ext/{name},,")
    info = site / "ext-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ext\nVersion: 1.0\n")
    (info / "RECORD").write_text("\n".join(record + ["ext/__init__.py,,", "ext-1.0.dist-info/RECORD,,"]) + "\n")
    (site / "ext" / "__init__.py").parent.mkdir(exist_ok=True)
    (site / "ext" / "__init__.py").write_text("")
    if bitsandbytes:
        (site / "bitsandbytes").mkdir()
        (site / "bitsandbytes" / "__init__.py").write_text("")
        shutil.copy(FIXTURES / bitsandbytes, site / "bitsandbytes" / f"libbitsandbytes_cuda{cuda.replace('.', '')}.so")
    for where, fixture in (extra or {}).items():
        (site / where).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, site / where)
    return site


def _run(site: Path, manifest: dict) -> dict:
    arg = json.dumps({"check": {"name": "cuda-binaries", "file": "cuda_binaries.py"}, "manifest": manifest})
    # -S: only the laid-out folder (PYTHONPATH) and the standard library are on sys.path, as in an image
    proc = subprocess.run([sys.executable, "-S", str(CHECK_DIR / "cuda_binaries.py"), arg], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0 and len(lines) == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(lines[0])


def _ext(archs: str, key: str = "TORCH_CUDA_ARCH_LIST") -> list[dict]:
    return [{"package": "ext", "version": "1.0", "env": {key: archs}}]


OP = f"ops/fused_adam_op.{TAG}.so"
HOST_OP = f"ops/cpu_adam_op.{TAG}.so"


def test_an_extension_built_for_exactly_the_list_passes_and_finds_libcudart_through_torch(tmp_path):
    site = _site(tmp_path, {OP: "ext_sm80_sm90.so", HOST_OP: "host_only.so"})
    result = _run(site, _manifest(compiled=_ext("8.0;9.0")))
    assert result["status"] == "pass", result
    assert "1 compiled extension(s) hold device code for exactly their arch list (ext: 8.0;9.0)" in result["detail"]
    assert "1 host-only" in result["detail"] and "one file each for libcudart" in result["detail"]


@pytest.mark.parametrize(("fixture", "archs", "message"), [
    # the negative proof the issue asks for: an extension built for another arch
    ("ext_sm80.so", "9.0", "holds sm_80: no cubin for sm_90; cubins for sm_80 too, not in the list"),
    ("ext_sm90.so", "8.0;9.0", "holds sm_90: no cubin for sm_80"),
    ("ext_sm80_sm90.so", "8.0", "cubins for sm_90 too, not in the list"),
    ("ext_sm80_ptx80_sm90.so", "8.0;9.0", "PTX for compute_80 (allowed only for the highest arch)"),
    ("ext_sm80_sm90.so", "8.0;9.0+PTX", "no PTX for compute_90 although the list asks for it (+PTX)"),
    ("ext_sm90a.so", "8.0", "no cubin for sm_80; cubins for sm_90 too"),
])
def test_an_extension_with_device_code_for_other_archs_fails_naming_them_and_the_fix(tmp_path, fixture, archs,
                                                                                     message):
    result = _run(_site(tmp_path, {OP: fixture}), _manifest(compiled=_ext(archs)))
    assert result["status"] == "fail", result
    assert message in result["detail"], result["detail"]
    assert f"(rebuild ext with the profile's arch list {archs})" in result["detail"]


@pytest.mark.parametrize(("fixture", "archs"), [
    ("ext_sm80_sm90_ptx90.so", "8.0;9.0"),  # PTX for the highest arch: what flash-attn 2 embeds itself
    ("ext_sm80_sm90_ptx90.so", "8.0;9.0+PTX"),
    ("ext_sm80_sm90.so", "80;90"),
])
def test_ptx_for_the_highest_arch_is_allowed(tmp_path, fixture, archs):
    key = "FLASH_ATTN_CUDA_ARCHS" if "." not in archs else "TORCH_CUDA_ARCH_LIST"
    result = _run(_site(tmp_path, {f"flash_attn_2_cuda.{TAG}.so": fixture}), _manifest(compiled=_ext(archs, key)))
    assert result["status"] == "pass", result


def test_on_a_target_without_cuda_compiled_extensions_hold_no_device_code(tmp_path):
    site = _site(tmp_path, {HOST_OP: "host_only.so"}, cuda=None)
    assert _run(site, _manifest("cpu", _ext("8.0")))["status"] == "pass"
    site = _site(tmp_path / "2", {OP: "ext_sm80.so", HOST_OP: "host_only.so"}, cuda=None)
    result = _run(site, _manifest("cpu", []) | {"compiled": [{"package": "ext", "version": "1.0", "env": {}}]})
    assert result["status"] == "fail"
    assert "holds device code (sm_80) but the cpu target compiles for no GPU" in result["detail"]


def test_a_library_nobody_ships_fails_as_ldd_reports_it(tmp_path):
    result = _run(_site(tmp_path, {OP: "ext_sm80_sm90.so", "ops/needs.so": "needs_absent.so"}),
                  _manifest(compiled=_ext("8.0;9.0")))
    assert result["status"] == "fail"
    assert "ldd finds no file for: needs.so needs libstackbuild_absent.so.1" in result["detail"]


def test_an_extension_that_loads_its_own_copy_of_a_cuda_library_fails(tmp_path):
    # torch loads nvidia/cu13/lib/libcudart.so.99; the extension its own copy (a CUDA toolkit's, say)
    site = _site(tmp_path, {OP: "ext_sm80_sm90_own_cudart.so"},
                 extra={"ext/ops/own-cuda/libcudart.so.99": "libcudart.so.99"})
    result = _run(site, _manifest(compiled=_ext("8.0;9.0")))
    assert result["status"] == "fail"
    detail = result["detail"]
    assert "libcudart resolves to 2 files" in detail and "one CUDA per image" in detail
    assert f"{site.resolve()}/nvidia/cu13/lib/libcudart.so.99 for libtorch_cuda.so" in detail
    assert f"{site.resolve()}/ext/ops/own-cuda/libcudart.so.99 for fused_adam_op.{TAG}.so" in detail


def test_prebuilt_cuda_code_must_cover_the_arch_list_and_is_compared_with_torch_without_one(tmp_path):
    # qlora: bitsandbytes' library for torch's CUDA (13.0 -> libbitsandbytes_cuda130.so)
    assert _run(_site(tmp_path, bitsandbytes="ext_sm80_sm90.so"), _manifest())["status"] == "pass"
    result = _run(_site(tmp_path / "2", bitsandbytes="ext_sm90.so"), _manifest())
    assert result["status"] == "warn"  # the target names no archs: a fact about the vendor's build
    assert "libbitsandbytes_cuda130.so has no device code for sm_80, which torch has kernels for" in result["detail"]
    # with an arch list, the prebuilt library must cover it
    result = _run(_site(tmp_path / "3", {OP: "ext_sm80_sm90.so"}, bitsandbytes="ext_sm90.so"),
                  _manifest(compiled=_ext("8.0;9.0")))
    assert result["status"] == "fail"
    assert "libbitsandbytes_cuda130.so has no device code for sm_80 (holds sm_90)" in result["detail"]
    # a cubin for an older minor of the same major, or PTX below it, runs on a newer one
    entries = cuda_binaries.fatbin_entries(str(FIXTURES / "ext_sm80_uncompressed_ptx80.so"))
    assert cuda_binaries.runs_on(entries, 86) and cuda_binaries.runs_on(entries, 120)
    sm90a = cuda_binaries.fatbin_entries(str(FIXTURES / "ext_sm90a.so"))
    assert cuda_binaries.runs_on(sm90a, 90) and not cuda_binaries.runs_on(sm90a, 100)


def test_torch_must_cover_the_profile_arch_list(tmp_path):
    result = _run(_site(tmp_path, {OP: "ext_sm80_sm90.so"}), _manifest(compiled=_ext("8.0;9.0;10.0")))
    assert result["status"] == "fail"
    assert "torch (libtorch_cuda.so) has no device code for sm_100 (holds sm_80 sm_90)" in result["detail"]


def test_a_cuda_target_with_a_cpu_torch_fails(tmp_path):
    result = _run(_site(tmp_path, cuda=None), _manifest())
    assert result["status"] == "fail" and "torch is a CPU build on the cuda target" in result["detail"]


def test_every_image_carries_it_with_its_arch_lists():
    for stack, release, target in (("deepspeed-zero3-offload", "2026.11", "cuda"), ("qlora", "2026.11", "cpu")):
        manifest = plan_build(load_stack(stack), release, target).manifest()
        assert "cuda-binaries" in [c["name"] for c in manifest["checks"]]
    assert CHECKS["cuda-binaries"].file == "cuda_binaries.py" and not CHECKS["cuda-binaries"].gpu
