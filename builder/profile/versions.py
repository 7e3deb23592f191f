"""Facts about which versions exist together: torch x CUDA x Python, base images, GPU archs.

The loader checks every profile against these tables, so a profile cannot name a combination
that has no wheels (torch 2.0.1 for CUDA 12.1), an interpreter its base image does not ship, or
an arch its nvcc cannot compile. Each row was read from the projects' release metadata; a
version that is not here is an error that says which versions are known, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class TorchLine:
    """What one torch minor series supports."""

    python_min: tuple[int, int]
    python_max: tuple[int, int]
    # torch.compile refuses newer interpreters ("Python 3.11+ not yet supported for torch.compile").
    compile_python_max: tuple[int, int]
    # CUDA builds published on the PyTorch index (cuXYZ), and the one PyPI's plain wheel carries.
    cuda_builds: tuple[str, ...]
    pypi_cuda: str


TORCH_LINES: dict[str, TorchLine] = {
    "2.0": TorchLine((3, 8), (3, 11), (3, 10), ("11.7", "11.8"), "11.7"),
    "2.1": TorchLine((3, 8), (3, 11), (3, 11), ("11.8", "12.1"), "12.1"),
    "2.2": TorchLine((3, 8), (3, 12), (3, 11), ("11.8", "12.1"), "12.1"),
    "2.3": TorchLine((3, 8), (3, 12), (3, 11), ("11.8", "12.1"), "12.1"),
    "2.4": TorchLine((3, 8), (3, 12), (3, 12), ("11.8", "12.1", "12.4"), "12.1"),
    "2.5": TorchLine((3, 9), (3, 13), (3, 12), ("11.8", "12.1", "12.4"), "12.4"),
    "2.6": TorchLine((3, 9), (3, 13), (3, 13), ("11.8", "12.4", "12.6"), "12.4"),
    "2.7": TorchLine((3, 9), (3, 13), (3, 13), ("11.8", "12.6", "12.8"), "12.6"),
    "2.8": TorchLine((3, 9), (3, 13), (3, 13), ("12.6", "12.8", "12.9"), "12.8"),
    "2.9": TorchLine((3, 10), (3, 14), (3, 13), ("12.6", "12.8", "13.0"), "12.8"),
    "2.10": TorchLine((3, 10), (3, 14), (3, 13), ("12.6", "12.8", "13.0"), "12.8"),
    # PyPI's 2.11.0 depends on cuda-toolkit==13.0.2's wheels (cp310-cp314); only its CUDA 13.0 build
    # was read here (the PyTorch index is out of reach).
    "2.11": TorchLine((3, 10), (3, 14), (3, 13), ("13.0",), "13.0"),
    # PyPI's 2.15.0 (2026-10-28) has cp311-cp315 wheels and depends on cuda-toolkit==13.2.2's wheels
    # (nvidia-cuda-runtime 13.2, cuDNN 9.26, NCCL 2.30; torch.version.cuda "13.2"), and its torch.compile
    # refuses Python 3.16+ (torch/_dynamo/eval_frame.py), read in qlora@2026.12's image; only that build was read.
    "2.15": TorchLine((3, 11), (3, 15), (3, 15), ("13.2",), "13.2"),
}

# torch before 2.3 was compiled against NumPy 1.x and fails to import numpy 2 arrays.
TORCH_NEEDS_NUMPY1_BELOW = (2, 3)

# The interpreter `apt-get install python3` gives on each distribution release.
DISTRO_PYTHON: dict[tuple[str, str], str] = {
    ("debian", "bullseye"): "3.9",
    ("debian", "bookworm"): "3.11",
    ("debian", "trixie"): "3.13",
    ("ubuntu", "20.04"): "3.8",
    ("ubuntu", "22.04"): "3.10",
    ("ubuntu", "24.04"): "3.12",
}

# The glibc of each distribution release: the newest manylinux tag its Python can install, which is
# what a lock resolves wheels for.
DISTRO_GLIBC: dict[tuple[str, str], str] = {
    ("debian", "bullseye"): "2_31",
    ("debian", "bookworm"): "2_36",
    ("debian", "trixie"): "2_41",
    ("ubuntu", "20.04"): "2_31",
    ("ubuntu", "22.04"): "2_35",
    ("ubuntu", "24.04"): "2_39",
}

# Lowest CUDA whose nvcc can emit code for an arch (compute capability).
ARCH_MIN_CUDA: dict[str, tuple[int, int]] = {
    "7.0": (9, 0),
    "7.5": (10, 0),
    "8.0": (11, 0),
    "8.6": (11, 1),
    "8.9": (11, 8),
    "9.0": (11, 8),
    "10.0": (12, 8),
    "12.0": (12, 8),
}

# xformers wheels require one exact torch release.
XFORMERS_TORCH: dict[str, str] = {
    "0.0.20": "2.0.1",
    "0.0.22": "2.0.1",
    "0.0.23": "2.1.2",
    "0.0.28.post3": "2.5.1",
    "0.0.29.post3": "2.6.0",
    "0.0.30": "2.7.0",
    "0.0.32.post2": "2.8.0",
    "0.0.33.post2": "2.9.1",
    "0.0.34": "2.10.0",
}

# The C++ standard torch's headers require, from the first series that raised it: torch >= 2.12's
# ATen/ATen.h stops with "#error C++20 or later compatible compiler is required to use ATen" (seen
# compiling flash-attn's flash_api.cpp against torch 2.15.0; DeepSpeed 0.19.8's op builder passes
# -std=c++20 from torch 2.12 on for the same reason).
TORCH_CXX_STANDARD: tuple[tuple[tuple[int, int], int], ...] = (((2, 12), 20),)

# The C++ standard each flash-attn release compiles its extension with (-std=c++NN in setup.py's
# cxx and nvcc flags), read from its sdist; a release that is not here is not assumed to compile
# against a torch that needs a newer standard (read its setup.py, then add it).
FLASH_ATTN_CXX_STANDARD: dict[str, int] = {"2.8.3.post2": 17}


def torch_cxx_standard(torch: str) -> int:
    """The C++ standard an extension must compile with against this torch (17 before 2.12)."""
    parts = version_tuple(torch)[:2]
    return max((std for since, std in TORCH_CXX_STANDARD if parts >= since), default=17)



@dataclass(frozen=True)
class BaseImage:
    """A parsed base image reference that stackbuild knows how to build on."""

    ref: str
    distro: str  # debian | ubuntu
    release: str  # bullseye, 22.04, ...
    python: str
    cuda: str | None  # the accelerator version of an accelerator's base ("11.8" for nvidia/cuda), None for none
    devel: bool


_DEBIAN_RE = re.compile(r"^debian:(?P<rel>[a-z]+)-slim\Z")
# The cuda accelerator's base (builder/profile/accelerators.py reads it).
CUDA_BASE_PATTERN = (
    r"^nvidia/cuda:(?P<version>\d+\.\d+)\.\d+-(?:cudnn\d*-)?(?P<flavour>devel|runtime|base)-ubuntu(?P<rel>\d+\.\d+)\Z"
)

# The slim bases in words (the unknown-base error; each accelerator's entry adds its own).
DEBIAN_BASES_HINT = "debian:{bullseye,bookworm,trixie}-slim"

# Minimum Linux driver per CUDA toolkit, per NVIDIA's CUDA toolkit release notes (the "Toolkit
# Driver Version" of each GA release). Below it, but at or above the major's minor-version
# compatibility floor, most programs still run (no PTX JIT): doctor warns there and fails below.
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.7": "515.43.04", "11.8": "520.61.05",
    "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03", "12.3": "545.23.06",
    "12.4": "550.54.14", "12.5": "555.42.02", "12.6": "560.28.03", "12.8": "570.26", "12.9": "575.51.03",
    "13.0": "580.65.06",
}
CUDA_COMPAT_FLOOR: dict[str, str] = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}


def parse_base_image(ref: str) -> BaseImage | None:
    """Parse a base image reference; None when stackbuild does not know it."""
    m = _DEBIAN_RE.match(ref)
    if m and ("debian", m["rel"]) in DISTRO_PYTHON:
        return BaseImage(ref, "debian", m["rel"], DISTRO_PYTHON["debian", m["rel"]], None, False)
    from .accelerators import parse_base  # the accelerators' bases, from their entries

    return parse_base(ref)


def version_tuple(text: str) -> tuple[int, ...]:
    """'3.10' -> (3, 10); '2.0.1+cu118' -> (2, 0, 1). Non-numeric parts end the tuple."""
    out: list[int] = []
    for part in re.split(r"[.+]", text):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def torch_line(version: str) -> TorchLine | None:
    """The support row for a torch release such as '2.0.1'."""
    parts = version_tuple(version)
    return TORCH_LINES.get(f"{parts[0]}.{parts[1]}") if len(parts) >= 2 else None


def torch_index_url(cuda: str) -> str:
    """The PyTorch wheel index that serves builds for one CUDA version."""
    return f"https://download.pytorch.org/whl/cu{cuda.replace('.', '')}"


def fmt_version(parts: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in parts)
