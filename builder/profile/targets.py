"""Targets as data: one entry per target (cuda, cpu), and the only module that knows their names.

A target decides the base image a release builds on, where torch comes from, whether code is
compiled for GPU archs, which GPUs a container of it gets by default, what platform its lock
resolves for and what the host needs to run it. Everything else asks the entry; adding a target
(ROCm, an arm64 platform) is one entry here plus its tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional

from . import versions as compat
from ..errors import SelectionError, UsageError
from ..safety.printable import printable
from .accelerators import ACCELERATORS, Accelerator

GIB = 1024 ** 3


@dataclass(frozen=True)
class TorchSource:
    """Where one target's torch wheel comes from: its version (with a local build tag) and index."""

    version: str
    index: str | None


@dataclass(frozen=True)
class Target:
    """One target's rules. Messages are (problem, fix) pairs the profile loader reports."""

    name: str
    gpu: bool  # images of it run on an accelerator: containers get every GPU by default
    accelerator: str | None  # the release field naming the accelerator version ("cuda"), None for none
    base_distro: str | None  # the distribution its base must be (None: its accelerator's base rule)
    base_fix: str  # what to use instead (a target with an accelerator: its accelerator's fix)
    image_size: int  # bytes of disk an image of it needs, about
    lock_machine: str = "x86_64"  # the platform tag's machine its locks resolve wheels for
    # A slim base of this distribution may carry an accelerator target: the accelerator's libraries
    # are then the wheels torch depends on, and its compiler (where code is compiled) the wheels of
    # the same toolkit release; None: only the accelerator's own images (nvidia/cuda).
    wheel_base_distro: str | None = None

    @property
    def compiles_for_archs(self) -> bool:
        """Whether compiled steps build device code, so the target lists the archs to compile for."""
        return self.accelerator is not None

    def default_gpus(self) -> str:
        return "all" if self.gpu else "none"

    @property
    def accelerator_entry(self) -> Accelerator | None:
        """The entry of the accelerator it builds for (builder/profile/accelerators.py), None for none."""
        return ACCELERATORS[self.accelerator] if self.accelerator is not None else None

    @property
    def gpu_capabilities(self) -> tuple[str, ...]:
        """What its containers' device request asks the engine for: its accelerator's capabilities."""
        entry = self.accelerator_entry
        return entry.device_capabilities if entry is not None else ("gpu",)

    @property
    def device_nodes(self) -> tuple[str, ...]:
        """Globs of the device nodes that mean a GPU is visible in its containers (its accelerator's), () for none."""
        entry = self.accelerator_entry
        return entry.device_nodes if entry is not None else ()

    def accelerator_version(self, release) -> str:
        """The release's version of its accelerator (the field its accelerator's entry names), '' for none.

        ``release`` is a raw or a resolved release; both answer ``accelerator_version(field)``.
        """
        entry = self.accelerator_entry
        return (release.accelerator_version(entry.version_field) or "") if entry is not None else ""

    def libraries_from_wheels(self, base: compat.BaseImage) -> bool:
        """Whether an image on ``base`` takes its accelerator from PyPI wheels (one source: torch's own)."""
        return self.accelerator is not None and base.cuda is None

    def base_problems(self, base: compat.BaseImage, text: str, accelerator_version: str,
                      compiles: bool = False) -> list[tuple[str, str]]:
        """Why ``base`` (written ``text`` in the profile) cannot carry this target (``compiles``: a
        package of the release is compiled on this target)."""
        entry = self.accelerator_entry
        if entry is None:
            if base.distro != self.base_distro:
                return [(f"the {self.name} target builds on a Debian slim base, not '{text}'", self.base_fix)]
            return []
        if base.cuda is not None and entry.parse_base(text) is None:  # another accelerator's base
            return [(f"the {self.name} target needs {entry.base_name}, not '{text}'",
                     entry.base_fix.format(version=accelerator_version))]
        if base.cuda is None:
            if self.wheel_base_distro is None or base.distro != self.wheel_base_distro:
                slim = f"a {self.wheel_base_distro} slim base or " if self.wheel_base_distro else ""
                return [(f"the {self.name} target needs {slim}{entry.base_name}, not '{text}'",
                         self.base_fix.format(version=accelerator_version))]
            toolkit = entry.wheel_toolkit
            if compiles and (toolkit is None or not toolkit.has(accelerator_version)):
                if toolkit is None:
                    return [(f"'{text}' has no {entry.compiler}, and PyPI has no {entry.label} compiler",
                             entry.base_fix.format(version=accelerator_version))]
                need = compat.fmt_version(toolkit.since)
                torch = entry.first_torch_with(toolkit.since)
                return [(f"'{text}' has no {entry.label} compiler, and PyPI has none for {entry.label} "
                         f"{accelerator_version} ({toolkit.before}); a compiled package needs {entry.label} >= {need} "
                         "on a slim base",
                         toolkit.instead.format(version=accelerator_version)
                         + f", or a torch built for {entry.label} >= {need}" + (f" (torch >= {torch})" if torch else ""))]
            return []
        problems = []
        if not base.devel:
            problems.append((f"'{text}' has no {entry.compiler}; compiled ops need a -devel image",
                             "use the -devel flavour of this image"))
        if base.cuda != accelerator_version:
            problems.append((f"base image {entry.label} {base.cuda} does not match the release's {entry.label} "
                             f"{accelerator_version}",
                             f"{entry.compiler} must match the {entry.label} torch was built with; use a base with "
                             f"the same {entry.label}"))
        return problems

    def wheel_toolkit(self, base: compat.BaseImage, compiles: bool):
        """The accelerator's compiler wheels (its entry's ``wheel_toolkit``) an image on ``base`` installs:
        on a slim base where code is compiled; None where the base brings the toolkit or nothing is compiled."""
        if not compiles or not self.libraries_from_wheels(base):
            return None
        return self.accelerator_entry.wheel_toolkit

    def toolkit_requirements(self, base: compat.BaseImage, compiles: bool, accelerator_version: str) -> tuple[str, ...]:
        """What an image on ``base`` installs to compile for this target beside torch's own libraries: the
        compiler wheels of ``accelerator_version``'s series (the lock holds the release torch depends on)."""
        toolkit = self.wheel_toolkit(base, compiles)
        return (toolkit.requirement(accelerator_version),) if toolkit is not None else ()

    def toolkit_home(self, python: str, accelerator_version: str) -> str:
        """Where the compiler wheels put the toolkit (bin/, include/, lib/) in the image's venv."""
        return self.accelerator_entry.wheel_toolkit.home_in(f"/opt/venv/lib/python{python}/site-packages",
                                                            accelerator_version)

    def runtime_env(self, base: compat.BaseImage) -> tuple[tuple[str, str], ...]:
        """What a container runtime reads from an image on ``base`` to hand it the GPUs and driver
        libraries: its accelerator entry's runtime_env (the accelerator's own images set the same; a slim
        base must say it itself)."""
        if not self.libraries_from_wheels(base):
            return ()
        return self.accelerator_entry.runtime_env

    def torch_source(self, torch: str, accelerator_version: str) -> TorchSource | tuple[str, str]:
        """torch's version and index for this target, or a (problem, fix) when no such build exists."""
        entry = self.accelerator_entry
        if entry is None:
            return TorchSource(torch, None)
        build = entry.torch_build(torch, accelerator_version)
        if len(build) == 3:
            return build[0], build[1]
        return TorchSource(build[0], build[1])

    def torch_origin(self, index: str | None, accelerator_version: str) -> str:
        """Where its torch comes from, in words (the Dockerfile's torch comment)."""
        entry = self.accelerator_entry
        label = entry.label if entry is not None else ""
        return f"from {index} (its {label} {accelerator_version} build)" if index else "from PyPI"

    def lock_platform(self, glibc: str) -> str:
        return f"{self.lock_machine}-manylinux_{glibc}"


# In order of preference: the first a release has is its default target.
TARGETS: dict[str, Target] = {t.name: t for t in (
    # a Debian slim base with CUDA from the wheels torch depends on (and, where code is compiled,
    # the compiler wheels of the same toolkit release), or an nvidia/cuda devel base; CUDA ops
    # compiled for an arch list
    Target("cuda", gpu=True, accelerator="cuda",
           base_distro=None, wheel_base_distro="debian",
           base_fix="use debian:bookworm-slim (CUDA from torch's wheels) or "
                    "nvidia/cuda:{version}.<patch>-cudnn-devel-ubuntu24.04 (NVIDIA's toolkit)",
           image_size=20 * GIB),
    # a Debian slim base, the same pins minus what needs a GPU to build
    Target("cpu", gpu=False, accelerator=None,
           base_distro="debian",
           base_fix="use debian:bullseye-slim (3.9), bookworm-slim (3.11) or trixie-slim (3.13)",
           image_size=10 * GIB),
)}
NAMES = tuple(TARGETS)
# What a profile may write where a target is named (the raw model's type).
TargetName = Literal[NAMES]  # type: ignore[valid-type]
DEFAULT = NAMES[0]


def target(name: str) -> Target:
    """The entry of a target name the profile model has already checked."""
    return TARGETS[name]


def known_bases_hint() -> str:
    """The bases a profile may name, in words: the slim bases for the targets without an accelerator, each
    accelerator's own for the targets it carries (its entry's base_hint)."""
    plain = [t.name for t in TARGETS.values() if t.accelerator is None]
    parts = [f"{compat.DEBIAN_BASES_HINT} for {', '.join(plain)}"]
    for entry in ACCELERATORS.values():
        carried = [t.name for t in TARGETS.values() if t.accelerator == entry.name]
        if entry.base_hint and carried:
            parts.append(f"{entry.base_hint} for {', '.join(carried)}")
    return "; ".join(parts)


def check_name(name: Optional[str]) -> Optional[str]:
    """``name`` when it is a target (or None); SelectionError naming the targets otherwise."""
    if name is not None and name not in TARGETS:
        raise SelectionError(f"unknown target '{printable(name)}': targets are {', '.join(NAMES)}")
    return name


def entry_or_default(name: Optional[str]) -> Target:
    """The entry of ``name``; the default target's for None or a name not in the table."""
    return TARGETS.get(name or DEFAULT, TARGETS[DEFAULT])


def runs_on_gpu(name: Optional[str]) -> bool:
    entry = TARGETS.get(name or "")
    return entry is not None and entry.gpu


def default_of(available) -> str:
    """The preferred target among ``available`` (names)."""
    return next((name for name in TARGETS if name in available), next(iter(available)))


def ordered(available) -> list[str]:
    """``available`` target names in the table's order."""
    return [name for name in TARGETS if name in available]


def for_host(has_gpu: bool) -> str:
    """The target a host can run: the first GPU target when it has a GPU, else the first without."""
    return next(t.name for t in TARGETS.values() if t.gpu == has_gpu)


# --gpus: none, all, a count, device indexes (0,1) or UUIDs (GPU-…).
GPUS = re.compile(r"^(none|all|[1-9][0-9]*|[0-9]+(,[0-9]+)*|GPU-[0-9a-f-]+(,GPU-[0-9a-f-]+)*)\Z")


def check_gpus(gpus: str) -> str:
    """``gpus`` when it is one of --gpus's forms; UsageError (before any container is made) otherwise."""
    if not GPUS.match(gpus):
        raise UsageError(f"--gpus {printable(gpus)}: use none, all, a count, or device ids like 0,1")
    return gpus


def host_accelerator(name: Optional[str]) -> Accelerator:
    """The accelerator whose host checks doctor runs: the target's, else the first GPU target's."""
    entry = TARGETS.get(name or "")
    if entry is not None and entry.accelerator_entry is not None:
        return entry.accelerator_entry
    return next(t.accelerator_entry for t in TARGETS.values() if t.accelerator_entry is not None)


def gpu_devices(target_name: Optional[str], gpus: Optional[str]) -> str:
    """The devices a container asks for: ``gpus`` as given (none, all, a count, ids), else the target's default.

    The engine's ``GpuRequest.of`` turns it into a device request.
    """
    chosen = check_gpus(gpus) if gpus is not None else entry_or_default(target_name).default_gpus()
    return chosen or "none"


def help_text() -> str:
    """The --target option's help: the names, the default first."""
    return f"{DEFAULT} (default) or " + " or ".join(NAMES[1:]) + "."
