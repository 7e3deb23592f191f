"""Accelerators as data: one entry per accelerator (CUDA today), which a target's entry names.

An entry says which release field carries the accelerator's version, which torch builds exist for
each version (its version tables), the wheel tag and index of a non-default build, what base image
carries it, what compute archs its compiler knows, which capabilities a container's device request
asks for, which device nodes mean "a GPU is visible" inside a container, and the host commands
doctor asks. Code reads the entry; a second accelerator is a second entry (see
tests/unit/test_accelerator_as_data.py, which registers a ROCm-like one and renders with it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from . import versions as compat


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
    ),
)}


def accelerator(name: str) -> Accelerator:
    return ACCELERATORS[name]


def parse_base(ref: str) -> compat.BaseImage | None:
    """``ref`` as the base of some accelerator, None when none knows it."""
    return next((b for b in (a.parse_base(ref) for a in ACCELERATORS.values()) if b is not None), None)
