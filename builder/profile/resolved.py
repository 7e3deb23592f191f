"""The resolved, frozen model of a stack profile: what everything downstream of the loader consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import versions as compat
from ..errors import SelectionError
from .knowledge import KnownIssue

@dataclass(frozen=True)
class Pin:
    """One pinned package: ``name==version`` or ``name @ git+https://…@<commit>``."""

    name: str
    version: str | None
    url: str | None
    requirement: str

    @property
    def is_git(self) -> bool:
        return self.url is not None


@dataclass(frozen=True)
class Fix:
    issue: KnownIssue
    via: str
    detail: str


@dataclass(frozen=True)
class ShippedFile:
    name: str
    description: str
    content: str


@dataclass(frozen=True)
class Patch:
    id: str
    summary: str
    package: str
    file: str
    find: str
    replace: str
    count: int
    fixes: str


@dataclass(frozen=True)
class CompiledPackage:
    pin: Pin
    why: str
    targets: tuple[str, ...]
    requires: tuple[Pin, ...]
    no_build_isolation: bool
    memory_per_job_gib: int | None
    parallel_extensions: bool
    env: dict[str, tuple[tuple[str, str], ...]]  # target -> sorted (name, value)


@dataclass(frozen=True)
class PackagePin:
    pin: Pin
    why: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class TargetSpec:
    name: str
    base: compat.BaseImage
    python: str
    arch_list: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    torch: Pin
    torch_index: str | None


@dataclass(frozen=True)
class Option:
    name: str
    summary: str
    targets: tuple[str, ...]
    packages: tuple[Pin, ...]
    fixes: tuple[Fix, ...]
    last_packages: tuple[Pin, ...] = ()  # installed in the release's last layer (every earlier layer shared)
    advisories: tuple[KnownIssue, ...] = ()  # what comes with it that no image prevents (shown, not claimed fixed)


@dataclass(frozen=True)
class Declined:
    """An option the release does not ship: why, and what to use instead."""

    name: str
    summary: str
    why: str
    instead: str
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class NamesakeUnable:
    scripts: tuple[str, ...]
    targets: tuple[str, ...]
    why: str
    fails_with: str | None
    issue: str | None
    instead: str
    training: str | None = None  # the release's training entry that runs in the script's place


@dataclass(frozen=True)
class Namesake:
    """The namesake project's scripts at the commit one release runs, and where it cannot."""

    repository: str
    scripts: tuple[str, ...]
    commit: str
    unable: tuple[NamesakeUnable, ...]

    def unable_for(self, script: str, target: str) -> NamesakeUnable | None:
        """The entry saying ``script`` cannot run on ``target``, or None where it must run."""
        for entry in self.unable:
            if script in entry.scripts and target in entry.targets:
                return entry
        return None


# The placeholders a training command may use; the runner fills each (builder/smoke/training.py).
TRAINING_PLACEHOLDERS = ("model", "data", "output", "steps", "processes")


@dataclass(frozen=True)
class TrainingEvidence:
    log: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # glob patterns relative to the run's output folder


@dataclass(frozen=True)
class TrainingVariant:
    """How a training entry runs on one target: arguments added to its command, and more evidence."""

    target: str
    flags: tuple[str, ...]
    evidence: TrainingEvidence


@dataclass(frozen=True)
class Training:
    """Today's training code a release runs (the profile's ``training`` list), from the image's own wheels."""

    name: str
    summary: str
    command: tuple[str, ...]  # words, placeholders such as {model} unfilled
    processes: int
    saves: str  # adapter | full
    evidence: TrainingEvidence
    targets: dict[str, TrainingVariant]

    def argv(self, target: str, values: dict[str, str]) -> list[str]:
        """The command with the target's flags added and every placeholder filled from ``values``."""
        words = (*self.command, *self.targets[target].flags)
        filled = {**values, "processes": str(self.processes)}
        return [word.format_map(filled) for word in words]

    def evidence_for(self, target: str) -> TrainingEvidence:
        """The entry's evidence and the target's together."""
        extra = self.targets[target].evidence
        return TrainingEvidence(self.evidence.log + extra.log, self.evidence.files + extra.files)


@dataclass(frozen=True)
class AuditAllow:
    """A known vulnerability a release may carry (the profile's audit_allow), until ``expires``."""

    id: str
    reason: str
    expires: str  # YYYY-MM-DD


@dataclass(frozen=True)
class Held:
    """A pin kept below the newest version of the release's date: at what, the newest, why, and the evidence."""

    package: str
    at: str
    newest: str
    why: str
    evidence: tuple[str, ...] = ()
    issue: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Release:
    name: str
    summary: str
    date: str
    era: bool
    notes: tuple[str, ...]
    torch: str
    with_torch: tuple[Pin, ...]
    bootstrap: tuple[Pin, ...]
    targets: dict[str, TargetSpec]
    apt: tuple[str, ...]
    compiled: tuple[CompiledPackage, ...]
    packages: tuple[PackagePin, ...]
    last_packages: tuple[PackagePin, ...]
    patches: tuple[Patch, ...]
    env: tuple[tuple[str, str], ...]
    fixes: tuple[Fix, ...]
    options: dict[str, Option]
    checks: tuple[str, ...] = ()  # named by the profile (stack and release); see builder/smoke/checks.py
    namesake: Namesake | None = None
    training: tuple[Training, ...] = ()
    audit_allow: tuple[AuditAllow, ...] = ()
    multinode: bool = False  # sshd, pdsh, RDMA user space and NCCL defaults in a layer after torch
    declined: dict[str, Declined] = field(default_factory=dict)
    held: tuple[Held, ...] = ()  # pins kept below the newest of the release's date, each with why
    # each accelerator version field the release sets ({"cuda": "12.1"}), read through the target's entry
    accelerator_versions: dict[str, str] = field(default_factory=dict)

    def accelerator_version(self, field_name: str) -> str | None:
        """The release's value of an accelerator's version field (builder/profile/accelerators.py)."""
        return self.accelerator_versions.get(field_name)

    def pinned_versions(self) -> dict[str, str]:
        """Every exact pin of the release by package name, torch and the bootstrap tools included (git pins have
        no version and are left out)."""
        pins = [*self.bootstrap, *self.with_torch, *(p for c in self.compiled for p in (*c.requires, c.pin)),
                *(p.pin for p in (*self.packages, *self.last_packages)),
                *(p for o in self.options.values() for p in (*o.packages, *o.last_packages))]
        return {"torch": self.torch, **{p.name: p.version for p in pins if p.version}}


@dataclass(frozen=True)
class Stack:
    name: str
    title: str
    description: str
    requires_python: str | None
    default_release: str
    notes: tuple[str, ...]
    files: tuple[ShippedFile, ...]
    releases: dict[str, Release]
    source: str
    path: Path = Path()  # the profile file (its locks/ folder is beside it)

    def release(self, name: str | None) -> Release:
        """The named release, or the default; unknown names list the ones that exist."""
        name = name or self.default_release
        if name not in self.releases:
            raise SelectionError(
                f"stack '{self.name}' has no release '{name}'; releases: {', '.join(self.releases)}"
                f" (default {self.default_release})"
            )
        return self.releases[name]
