"""Accelerators as data: one entry per accelerator (CUDA today), which a target's entry names.

An entry says which release field carries the accelerator's version, which torch builds exist for
each version (its version tables), the wheel tag and index of a non-default build, what base image
carries it, what compute archs its compiler knows, which capabilities a container's device request
asks for, which device nodes mean "a GPU is visible" inside a container, and the host commands
doctor asks. Code reads the entry; a second accelerator is a second entry (see
tests/unit/test_accelerator_as_data.py, which registers a ROCm-like one and renders with it).

An entry may also say how an image takes the accelerator from PyPI instead of from its base image
(``wheel_toolkit``): from which version its compiler is on PyPI, which requirement installs it at
a version (the lock then holds it at the exact release torch depends on, hashed like every
package), where its wheels put the toolkit and what build systems need linked beside it; and which
packages of torch's layer bundle byte-identical copies of its libraries (``bundled_copies``),
which the torch layer replaces by links to the accelerator's own wheels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from . import versions as compat


@dataclass(frozen=True)
class WheelToolkit:
    """The accelerator's compiler as PyPI wheels: what a slim base installs where it compiles device code."""

    since: tuple[int, int]  # the first accelerator version whose compiler is on PyPI
    before: str  # why an older version has none there, in words
    package: str  # the metapackage torch itself depends on ("cuda-toolkit")
    extras: tuple[str, ...]  # its extras that hold the compiler, its headers and its device libraries
    home: str  # where its wheels put the toolkit, relative to site-packages; ``{major}``: the version's major
    root: str  # the toolkit's conventional path, linked to ``home`` ("/usr/local/cuda")
    home_variable: str  # the variable build systems read the toolkit's root from ("CUDA_HOME")
    compiler: str  # the compiler, relative to the root ("bin/nvcc")
    library_dir: str  # its libraries, relative to the root ("lib")
    links: tuple[tuple[str, str], ...]  # (link, target) under the root that build systems look for
    instead: str  # the accelerator's own image for a version without compiler wheels, with ``{version}``

    def has(self, version: str) -> bool:
        """Whether PyPI has the compiler of accelerator ``version``."""
        return compat.version_tuple(version) >= self.since

    def requirement(self, version: str) -> str:
        """The requirement for the compiler of ``version``'s release series (the lock picks the release)."""
        return f"{self.package}[{','.join(self.extras)}]=={version}.*"

    def home_in(self, site_packages: str, version: str) -> str:
        return f"{site_packages}/{self.home.format(major=compat.version_tuple(version)[0])}"


@dataclass(frozen=True)
class BundledCopy:
    """A package of torch's layer that ships its own copies of the accelerator's libraries."""

    package: str  # its distribution name ("triton")
    since: tuple[int, ...]  # its first version that bundles them
    folder: str  # where, relative to site-packages
    original: str  # where the accelerator's own wheels put the originals, relative to site-packages


@dataclass(frozen=True)
class Accelerator:
    """One accelerator's rules. In a format, ``{version}`` is its version and ``{digits}`` that without dots."""

    name: str  # what a target's ``accelerator`` names, and the manifest's "accelerator"
    label: str  # how messages write it ("CUDA")
    version_field: str  # the release field that carries its version ("cuda")
    # torch minor series -> (the builds of it the torch index serves, the one PyPI's plain wheel carries)
    builds: Mapping[str, tuple[tuple[str, ...], str | None]]
    wheel_tag: str  # a non-PyPI build's local version tag, e.g. "+cu{digits}"
    index_url: str  # the torch index serving that build
    base_pattern: str  # a base image reference it builds on; groups: version, flavour, rel
    base_distro: str  # the distribution of that base (DISTRO_PYTHON's key)
    base_name: str  # the base in words ("an nvidia/cuda base")
    base_fix: str  # what to use instead, with ``{version}``
    compiler: str  # what compiles device code in the base ("nvcc")
    arch_min: Mapping[str, tuple[int, int]]  # arch -> the lowest accelerator version that compiles for it
    compiler_flavours: tuple[str, ...] = ("devel",)  # the base flavours that carry the compiler
    device_capabilities: tuple[str, ...] = ("gpu",)  # the engine device request's capabilities
    device_nodes: tuple[str, ...] = ()  # globs of device nodes that mean a GPU is visible in a container
    vendor: str = ""  # whose driver the host needs ("NVIDIA")
    # doctor's host checks: the command that lists its GPUs as CSV "name, compute capability, driver version",
    # the container runtime the engine needs registered, what provides it and how to register it
    host_tool: tuple[str, ...] = ()
    host_runtime: str | None = None
    host_runtime_needs: str = ""
    host_runtime_fix: str = ""
    wheel_toolkit: WheelToolkit | None = None  # its compiler from PyPI, None where it has none there
    bundled_copies: tuple[BundledCopy, ...] = ()
    # doctor's driver check: the lowest driver per accelerator version, and per major version the floor of
    # its minor-version compatibility (below the minimum but above the floor most programs still run)
    min_driver: Mapping[str, str] = field(default_factory=dict)
    driver_floor: Mapping[str, str] = field(default_factory=dict)
    k8s_resource: str = ""  # the Kubernetes extended resource a pod requests its GPUs as
    # what a container runtime reads from an image on a slim base (libraries from wheels) to hand it the
    # GPUs and driver libraries (the accelerator's own base images set the same)
    runtime_env: tuple[tuple[str, str], ...] = ()
    base_hint: str = ""  # the base images it knows, in words (the unknown-base error)

    def first_torch_with(self, since: tuple[int, int]) -> str | None:
        """The first torch minor series (of its version tables) whose PyPI wheel is built for a version >= ``since``
        (the wheel whose dependencies are the accelerator's wheels)."""
        return next((minor for minor, (_, pypi) in sorted(self.builds.items(), key=lambda i: compat.version_tuple(i[0]))
                     if pypi is not None and compat.version_tuple(pypi) >= since), None)

    def digits(self, version: str) -> str:
        return version.replace(".", "")

    def parse_base(self, ref: str) -> compat.BaseImage | None:
        """``ref`` as a base of this accelerator, None when it is not one."""
        m = re.match(self.base_pattern, ref)
        if m is None or (self.base_distro, m["rel"]) not in compat.DISTRO_PYTHON:
            return None
        return compat.BaseImage(ref, self.base_distro, m["rel"], compat.DISTRO_PYTHON[self.base_distro, m["rel"]],
                                m["version"], m["flavour"] in self.compiler_flavours)

    def torch_build(self, torch: str, version: str) -> tuple[str, str | None] | tuple[str, str, None]:
        """(torch version, index) for ``torch`` built for ``version``; a (problem, fix, None) when none exists."""
        parts = compat.version_tuple(torch)
        known, pypi = self.builds.get(f"{parts[0]}.{parts[1]}", ((), None)) if len(parts) >= 2 else ((), None)
        if version not in known:
            return (f"torch {torch} has no {self.label} {version} build",
                    f"torch {torch} is built for {self.label} {', '.join(known)}", None)
        if version == pypi:
            return torch, None
        names = {"digits": self.digits(version), "version": version}
        return torch + self.wheel_tag.format(**names), self.index_url.format(**names)


ACCELERATORS: dict[str, Accelerator] = {a.name: a for a in (
    Accelerator(
        "cuda", label="CUDA", version_field="cuda",
        builds={minor: (line.cuda_builds, line.pypi_cuda) for minor, line in compat.TORCH_LINES.items()},
        wheel_tag="+cu{digits}", index_url="https://download.pytorch.org/whl/cu{digits}",
        base_pattern=compat.CUDA_BASE_PATTERN, base_distro="ubuntu", base_name="an nvidia/cuda base",
        base_fix="use nvidia/cuda:{version}.<patch>-cudnn-devel-ubuntu22.04 or similar",
        compiler="nvcc", arch_min=compat.ARCH_MIN_CUDA,
        device_capabilities=("gpu",),
        device_nodes=("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/dxg"),
        vendor="NVIDIA",
        host_tool=("nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"),
        host_runtime="nvidia", host_runtime_needs="NVIDIA Container Toolkit",
        host_runtime_fix="install the NVIDIA Container Toolkit and run: nvidia-ctk runtime configure --runtime=docker",
        # CUDA 13's nvidia-cuda-nvcc holds nvcc, cudafe++, fatbinary, nvlink and ptxas (nvidia-nvvm: cicc,
        # nvidia-cuda-crt: its headers, nvidia-cuda-cccl: CUB/Thrust) under nvidia/cu13/; the extras of
        # cuda-toolkit, which torch >= 2.11 depends on at one exact release (2.11.0: 13.0.2, 2.15.0: 13.2.2).
        # nvcc.profile links from $CUDA_HOME/lib64, and -lcudart needs the unversioned name.
        wheel_toolkit=WheelToolkit(
            since=(13, 0), before="its nvidia-cuda-nvcc-cu12 wheels hold only ptxas",
            package="cuda-toolkit", extras=("cccl", "crt", "nvcc", "nvvm"), home="nvidia/cu{major}",
            root="/usr/local/cuda", home_variable="CUDA_HOME", compiler="bin/nvcc", library_dir="lib",
            links=(("lib64", "lib"),),
            instead="use nvidia/cuda:{version}.<patch>-cudnn-devel-ubuntu24.04 (NVIDIA's toolkit)"),
        # triton 3 ships CUPTI (for its profiler) byte for byte as the CUDA CUPTI wheel torch depends on:
        # triton 3.6.0 beside nvidia-cuda-cupti-cu12 12.8 (56.5 MB: libcupti three times under three names).
        bundled_copies=(
            BundledCopy("triton", (3,), "triton/backends/nvidia/lib", "nvidia"),
        ),
        min_driver=compat.CUDA_MIN_DRIVER, driver_floor=compat.CUDA_COMPAT_FLOOR,
        k8s_resource="nvidia.com/gpu",
        runtime_env=(("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"), ("NVIDIA_VISIBLE_DEVICES", "all")),
        base_hint="nvidia/cuda:<X.Y.Z>-[cudnn[N]-]devel-ubuntu{20.04,22.04,24.04}",
    ),
)}


def accelerator(name: str) -> Accelerator:
    return ACCELERATORS[name]


def parse_base(ref: str) -> compat.BaseImage | None:
    """``ref`` as the base of some accelerator, None when none knows it."""
    return next((b for b in (a.parse_base(ref) for a in ACCELERATORS.values()) if b is not None), None)
