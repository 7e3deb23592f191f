"""The GPU checks' GPU branches, without Docker or a GPU: each check file runs on this Python with a
stub torch that reports GPUs (capability, name, the arch list torch was built for) and the
packages the branch loads laid out as an image has them, and must fail when what it guards is
broken: a GPU torch has no kernels for, bitsandbytes' CPU library loaded on a GPU machine, a
flash-attn extension whose import fails with an undefined symbol (a real shared library). The
branches that need torch's arithmetic (gpu-matmul, flash-attn-fwd-bwd) are proven in the cpu
images (tests/integration/test_smoke_engine.py, a stub GPU over the image's real torch).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from builder.smoke.checks import CHECKS
from builder.plan.build_plan import plan_build
from builder.profile.load import load_stack
from builder.safety.paths import templates_dir

CHECK_DIR = templates_dir() / "context" / "smoke" / "checks"
FIXTURES = Path(__file__).parent / "fixtures" / "cuda"

STUB_TORCH = '''
import json, os
_GPU = json.loads(os.environ["STUB_GPU"])
__version__ = _GPU.get("torch", "2.10.0+cu128")


class cuda:
    @staticmethod
    def is_available():
        return _GPU["count"] > 0

    @staticmethod
    def device_count():
        return _GPU["count"]

    @staticmethod
    def get_device_capability(index=0):
        return tuple(_GPU["capability"])

    @staticmethod
    def get_device_name(index=0):
        return _GPU.get("name", "Stub GPU")

    @staticmethod
    def get_arch_list():
        return list(_GPU["arch_list"])


class version:
    cuda = _GPU.get("cuda", "12.8")
    hip = None
'''

# torch 2.10.0+cu128's own arch list (torch.cuda.get_arch_list() on a GPU host)
TORCH_210 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


def _run(tmp_path: Path, check: str, stack: str, release: str, gpu: dict, packages: dict[str, str | Path]) -> dict:
    """Run a check with a stub torch for ``gpu`` and ``packages`` (relative path -> text, or a fixture to copy)."""
    site = tmp_path / "site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(STUB_TORCH)
    for where, content in packages.items():
        (site / where).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, site / where)
        else:
            (site / where).write_text(content)
    manifest = plan_build(load_stack(stack), release, "cuda").manifest()
    arg = json.dumps({"check": {"name": check, "file": CHECKS[check].file}, "manifest": manifest})
    proc = subprocess.run([sys.executable, "-S", str(CHECK_DIR / CHECKS[check].file), arg], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "STUB_GPU": json.dumps(gpu)})
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0 and len(lines) == 1, (proc.stdout, proc.stderr)
    return json.loads(lines[0])


@pytest.mark.parametrize(("capability", "status", "messages"), [
    ((9, 0), "pass", ["kernels for every GPU: GPU 0 (Stub GPU, sm_90)"]),
    ((8, 9), "pass", ["sm_89"]),  # no sm_89 cubin, but sm_80/sm_86's run on it
    ((6, 1), "fail", ["torch 2.10.0+cu128 has no kernels for it",
                      "flash-attn (FLASH_ATTN_CUDA_ARCHS) was compiled for 8.0 9.0 10.0 12.0 only",
                      "flash-attn needs Ampere or newer (sm80+)"]),
    ((11, 0), "fail", ["flash-attn (FLASH_ATTN_CUDA_ARCHS) was compiled for 8.0 9.0 10.0 12.0 only"]),
])
def test_gpu_arch_fails_on_a_gpu_the_image_has_no_kernels_for(tmp_path, capability, status, messages):
    gpu = {"count": 1, "capability": capability, "arch_list": TORCH_210 + ["sm_110"]}
    result = _run(tmp_path, "gpu-arch", "flash-attn-fsdp", "2026.11", gpu, {})
    assert result["status"] == status, result
    assert all(m in result["detail"] for m in messages), result["detail"]


def _bitsandbytes(version: str, library: str | None, compiled: bool) -> dict[str, str | Path]:
    """A bitsandbytes whose cextension loaded ``library`` (a real shared library, by ctypes) or none."""
    load = (f"lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), {library!r}))" if library else "lib = None")
    files: dict[str, str | Path] = {
        "bitsandbytes/__init__.py": "from . import cextension\n",
        "bitsandbytes/cextension.py": f"import ctypes, os\n{load}\nCOMPILED_WITH_CUDA = {compiled}\n",
        f"bitsandbytes-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: bitsandbytes\nVersion: {version}\n",
    }
    if library:
        files[f"bitsandbytes/{library}"] = FIXTURES / "host_only.so"
    return files


@pytest.mark.parametrize(("stack", "release", "version", "library", "compiled", "messages"), [
    # the field notes' failure: the CPU library loaded on a machine with a GPU
    ("qlora", "2026.11", "0.49.1", "libbitsandbytes_cpu.so", False,
     ["bitsandbytes 0.49.1 loaded libbitsandbytes_cpu.so on a machine with 1 GPU(s)", "(bnb-cpu-lib)"]),
    ("qlora", "2023.07", "0.40.0", "libbitsandbytes_cpu.so", False,
     ["loaded libbitsandbytes_cpu.so", "put the CUDA runtime directory", "LD_LIBRARY_PATH"]),
    # a CUDA-named library that was not compiled with CUDA is no better
    ("qlora", "2026.11", "0.49.1", "libbitsandbytes_cuda128.so", False, ["loaded libbitsandbytes_cuda128.so"]),
    ("qlora", "2026.11", "0.49.1", None, False, ["bitsandbytes loaded no native library"]),
])
def test_bitsandbytes_cuda_fails_when_bitsandbytes_loads_no_cuda_library_on_a_gpu(tmp_path, stack, release, version,
                                                                                   library, compiled, messages):
    gpu = {"count": 1, "capability": (9, 0), "arch_list": TORCH_210}
    result = _run(tmp_path, "bitsandbytes-cuda", stack, release, gpu, _bitsandbytes(version, library, compiled))
    assert result["status"] == "fail", result
    assert all(m in result["detail"] for m in messages), result["detail"]


FLASH_ATTN = {"flash_attn/__init__.py": "import flash_attn_2_cuda\n__version__ = '2.8.3.post2'\n"
                                        "def flash_attn_func(q, k, v, causal=False):\n    raise NotImplementedError\n"}


def test_flash_attn_import_fails_on_an_extension_built_against_another_torch(tmp_path):
    gpu = {"count": 1, "capability": (9, 0), "arch_list": TORCH_210}
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    # a real shared library whose import fails: undefined symbol: _ZN3c104cuda20c10_cuda_check_implementation...
    broken = {**FLASH_ATTN, f"flash_attn_2_cuda{suffix}": FIXTURES / "undefined_symbol.so"}
    result = _run(tmp_path, "flash-attn-import", "flash-attn-fsdp", "2026.11", gpu, broken)
    assert result["status"] == "fail", result
    assert "undefined symbol: _ZN3c104cuda20c10_cuda_check_implementation" in result["detail"]
    assert "pip install --no-build-isolation flash-attn==2.8.3.post2 after torch" in result["detail"]
    working = {**FLASH_ATTN, "flash_attn_2_cuda.py": ""}
    assert _run(tmp_path / "ok", "flash-attn-import", "flash-attn-fsdp", "2026.11", gpu, working)["status"] == "pass"
