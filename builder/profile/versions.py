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
}

# The first CUDA whose nvcc is on PyPI: nvidia-cuda-nvcc 13.x holds nvcc, cudafe++, fatbinary,
# nvlink and ptxas (with nvidia-nvvm's cicc and nvidia-cuda-crt's headers), under nvidia/cu13/;
# nvidia-cuda-nvcc-cu12 (12.8, 12.9) holds only ptxas.
NVCC_WHEEL_MIN_CUDA = (13, 0)
# The compiler a slim base's image installs where it compiles CUDA code: the extras of the
# cuda-toolkit metapackage that torch >= 2.11 itself depends on (torch 2.11.0: cuda-toolkit==13.0.2
# [cublas,cudart,...]), so the lock holds it at torch's version and nvcc, headers and libraries
# are one release.
CUDA_WHEEL_COMPILER = "cuda-toolkit[cccl,crt,nvcc,nvvm]"

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

KNOWN_BASES_HINT = (
    "debian:{bullseye,bookworm,trixie}-slim for cpu; "
    "nvidia/cuda:<X.Y.Z>-[cudnn[N]-]devel-ubuntu{20.04,22.04,24.04} for cuda"
)


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
