"""BuildPlan: everything one image depends on, for one stack x release x target x options.

The plan is where Python prepares and orders the data; templates only loop over it. Nothing
here touches Docker or the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import labels as schema
from ..profile import targets
from ..profile.accelerators import ACCELERATORS, WheelToolkit
from ..profile.versions import version_tuple
from ..smoke.checks import COMMON_CHECKS, SmokeCheck, ordered
from ..profile.versions import DISTRO_GLIBC, parse_base_image
from ..errors import LockError, SelectionError
from ..lock.format import Lock, LockInputs, lock_file, lock_problems, read_lock
from ..profile.load import load_stack
from ..profile.resolved import Fix, Patch, Pin, Release, ShippedFile, Stack, TargetSpec
from ..safety.printable import printable

# Always in the image: the interpreter with headers (JIT-built ops include Python.h), a C
# toolchain (torch.compile and DeepSpeed's JIT compile at run time), CA certificates, and git
# (git pins, `pip install git+…`). The same list everywhere keeps the first layers shared.
IMPLIED_APT = ("build-essential", "ca-certificates", "git", "python3", "python3-dev", "python3-venv")
# What multi-node training needs in a release marked `multinode`, in one small layer after torch
# (every stack of a release family shares it): an ssh server and client for DeepSpeed's and MPI-style
# launchers (host keys are made when a container starts, never in a layer), pdsh (DeepSpeed's
# default multi-node runner), the RDMA user-space libraries NCCL loads for InfiniBand/RoCE (without
# them it falls back to TCP sockets), and iproute2 to name the interface NCCL_SOCKET_IFNAME wants.
# The same names on Debian and on the Ubuntu of nvidia/cuda bases.
MULTINODE_APT = ("ibverbs-providers", "iproute2", "libibverbs1", "librdmacm1", "openssh-client", "openssh-server",
                 "pdsh")
VENV = "/opt/venv"
STACKBUILD_DIR = "/opt/stackbuild"
HELD = f"{STACKBUILD_DIR}/held.txt"


@dataclass(frozen=True)
class CompiledStep:
    """One package built against the installed torch, with its build environment."""

    pin: Pin
    why: str
    requires: tuple[Pin, ...]
    no_build_isolation: bool
    memory_per_job_gib: int | None
    parallel_extensions: bool  # its extensions build side by side, through the build_ext hook in the context
    env: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class BuildPlan:
    stack: Stack
    release: Release
    target: TargetSpec
    options: tuple[str, ...]
    apt: tuple[str, ...]  # OS packages every stack gets (one shared layer before Python and torch)
    compiled: tuple[CompiledStep, ...]
    packages: tuple[Pin, ...]
    last_packages: tuple[Pin, ...]
    patches: tuple[Patch, ...]
    files: tuple[ShippedFile, ...]
    runtime_env: tuple[tuple[str, str], ...]
    fixes: tuple[Fix, ...]
    pins: dict[str, str] = field(default_factory=dict)
    checks: tuple[SmokeCheck, ...] = COMMON_CHECKS
    lock: Lock | None = None  # every package the image installs, with hashes (None: not locked)
    stack_apt: tuple[str, ...] = ()  # the release's own OS packages: a layer after torch, so torch stays shared
    multinode_apt: tuple[str, ...] = ()  # MULTINODE_APT where the release is multi-node ready, else nothing
    # the accelerator's compiler from wheels (a slim base that compiles): its requirements, and the
    # folder they fill, which becomes CUDA_HOME; empty where the base brings the toolkit
    toolkit: tuple[str, ...] = ()
    toolkit_home: str | None = None
    toolkit_layout: WheelToolkit | None = None  # the accelerator entry's rules for laying it out

    @property
    def spec(self) -> str:
        return f"{self.stack.name}@{self.release.name}"

    @property
    def label(self) -> str:
        """'qlora@2023.07 (cpu +xformers)': the spec with its target and options, for messages and locks."""
        return f"{self.spec} ({self.target.name}{''.join(f' +{o}' for o in self.options)})"

    @property
    def torch_origin(self) -> str:
        """Where torch comes from, in words, as the target's entry says it."""
        entry = targets.target(self.target.name)
        return entry.torch_origin(self.target.torch_index, entry.accelerator_version(self.release))

    @property
    def site_packages(self) -> str:
        return f"/opt/venv/lib/python{self.target.python}/site-packages"

    @property
    def bundled_copies(self) -> tuple[tuple[str, str], ...]:
        """(folder, original) pairs where a package of the torch layer bundles copies of an accelerator's
        libraries (every accelerator's entry, whatever the target: the cpu and cuda images share the layer),
        as the lock's [torch] section pins it; the layer links those copies to the originals. Empty when
        not locked (the versions are unknown)."""
        if self.lock is None:
            return ()
        torch = {p.name: p.version for p in self.lock.group("torch")}
        return tuple(sorted({(c.folder, c.original) for a in ACCELERATORS.values() for c in a.bundled_copies
                             if torch.get(c.package) and version_tuple(torch[c.package])[:len(c.since)] >= c.since}))

    def manifest(self) -> dict:
        """What the image says about itself (copied to /opt/stackbuild/manifest.json)."""
        return {
            "stack": self.stack.name,
            "release": self.release.name,
            "target": self.target.name,
            # what the checks branch on: the accelerator the target builds for ("cuda"), None for none
            "accelerator": targets.target(self.target.name).accelerator,
            # what "a GPU is visible" means to the smoke runner: globs of its accelerator's device nodes
            "device_nodes": list(targets.target(self.target.name).device_nodes),
            "options": list(self.options),
            "python": self.target.python,
            "base": self.target.base.ref,
            "pins": self.pins,
            "compiled": [{"package": c.pin.name, "version": c.pin.version, "env": dict(c.env)} for c in self.compiled],
            "patches": [{"id": p.id, "package": p.package, "file": p.file, "find": p.find, "replace": p.replace,
                         "count": p.count} for p in self.patches],
            "files": [f.name for f in self.files],
            "fixes": [f.issue.id for f in self.fixes],
            "checks": [{"name": c.name, "file": c.file, "gpu": c.gpu, "timeout": c.timeout,
                        "proves": [f.issue.id for f in self.fixes if c.name in f.issue.proven_by]}
                       for c in self.checks],
            "locked": self.lock is not None,
            "multinode": bool(self.multinode_apt),
            **({"bundled_copies_linked": [folder for folder, _ in self.bundled_copies]} if self.bundled_copies else {}),
        }

    def labels(self) -> dict[str, str]:
        """Image labels known at render time (the content hash is added when building)."""
        return {
            schema.OCI_TITLE: f"stackbuild {self.spec} ({self.target.name})",
            schema.OCI_DESCRIPTION: self.stack.title,
            schema.OCI_VERSION: f"{self.release.name}-{self.target.name}",
            schema.OCI_BASE_NAME: self.target.base.ref,
            schema.STACK: self.stack.name,
            schema.RELEASE: self.release.name,
            schema.TARGET: self.target.name,
            schema.OPTIONS: ",".join(self.options),
            schema.PINS: json.dumps(self.pins, sort_keys=True, separators=(",", ":")),
            schema.FIXES: ",".join(f.issue.id for f in self.fixes),
            **({schema.LOCK: json.dumps(self.lock.versions(), sort_keys=True, separators=(",", ":"))}
               if self.lock else {}),
        }


def select_checks(release: Release, fixes: tuple[Fix, ...] | list[Fix]) -> tuple[SmokeCheck, ...]:
    """The common checks, the proof of every fix claimed, the patch check, and what the profile names."""
    names = {c.name for c in COMMON_CHECKS} | {n for f in fixes for n in f.issue.proven_by} | set(release.checks)
    if release.patches:
        names.add("patches")
    if release.multinode:
        names.add("multinode")
    return ordered(names)


def select_target(stack: Stack, release: Release, target: str | None) -> TargetSpec:
    name = target or targets.default_of(release.targets)
    if name not in release.targets:
        known = ", ".join(targets.ordered(release.targets))
        raise SelectionError(f"{stack.name}@{release.name} has no target '{printable(name)}'; targets: {known}")
    return release.targets[name]


def plan_build(stack: Stack, release: str | None = None, target: str | None = None,
               options: tuple[str, ...] | list[str] = (), with_lock: bool = True) -> BuildPlan:
    """Resolve one image's plan; unknown releases, targets and options list what exists.

    The plan carries its lock when the stack has one (LockError when it is stale); ``with_lock=False``
    plans without reading it, as `stackbuild lock` does to make one.
    """
    rel = stack.release(release)
    spec = select_target(stack, rel, target)
    chosen = tuple(sorted(set(options)))
    for name in chosen:
        if name in rel.declined:
            dec = rel.declined[name]
            raise SelectionError(f"{stack.name}@{rel.name} does not ship option '{name}' ({dec.summary}): {dec.why}; "
                                 f"instead: {dec.instead}")
        if name not in rel.options:
            known = ", ".join(rel.options) or "none"
            raise SelectionError(f"{stack.name}@{rel.name} has no option '{printable(name)}'; options: {known}")
        if spec.name not in rel.options[name].targets:
            raise SelectionError(f"option '{name}' of {stack.name}@{rel.name} is for targets "
                                 f"{', '.join(rel.options[name].targets)}, not {spec.name}")

    compiled = []
    for comp in rel.compiled:
        if spec.name not in comp.targets:
            continue
        env = dict(comp.env.get(spec.name, ()))
        if spec.arch_list:
            # No GPU is visible during docker build: name the archs, or torch guesses none.
            env["TORCH_CUDA_ARCH_LIST"] = ";".join(spec.arch_list)
        compiled.append(CompiledStep(comp.pin, comp.why, comp.requires, comp.no_build_isolation,
                                     comp.memory_per_job_gib, comp.parallel_extensions, tuple(sorted(env.items()))))

    packages = [p.pin for p in rel.packages if spec.name in p.targets]
    fixes = list(rel.fixes)
    for name in chosen:
        packages.extend(rel.options[name].packages)
        fixes.extend(rel.options[name].fixes)
    packages.sort(key=lambda p: p.name)
    last = [p.pin for p in rel.last_packages if spec.name in p.targets]
    for name in chosen:
        last.extend(rel.options[name].last_packages)
    last_packages = sorted(last, key=lambda p: p.name)

    multinode_apt = MULTINODE_APT if rel.multinode else ()
    stack_apt = set(rel.apt) - set(IMPLIED_APT) - set(multinode_apt)
    all_pins = [spec.torch, *rel.with_torch, *(p for c in compiled for p in (*c.requires, c.pin)), *packages,
                *last_packages]
    pins = {p.name: (p.version or p.url or "") for p in all_pins}

    entry = targets.target(spec.name)
    toolkit = entry.toolkit_requirements(spec.base, bool(compiled), entry.accelerator_version(rel))
    runtime_env = dict(entry.runtime_env(spec.base))
    runtime_env.update(rel.env)
    runtime_env.update(spec.env)
    plan = BuildPlan(
        stack=stack, release=rel, target=spec, options=chosen, apt=IMPLIED_APT, compiled=tuple(compiled),
        packages=tuple(packages), last_packages=tuple(last_packages), patches=rel.patches, files=stack.files,
        runtime_env=tuple(sorted(runtime_env.items())), fixes=tuple(fixes), pins=dict(sorted(pins.items())),
        checks=select_checks(rel, fixes), stack_apt=tuple(sorted(stack_apt)), multinode_apt=multinode_apt,
        toolkit=toolkit, toolkit_layout=entry.wheel_toolkit(spec.base, bool(compiled)),
        toolkit_home=entry.toolkit_home(spec.python, entry.accelerator_version(rel)) if toolkit else None,
    )
    return replace(plan, lock=load_lock(plan)) if with_lock else plan



def plan_for(name: str, release: str | None = None, target: str | None = None,
             options: tuple[str, ...] | list[str] = (), with_lock: bool = True) -> BuildPlan:
    """Load a stack (by name or profile path) and plan one image of it."""
    return plan_build(load_stack(name), release, target, options, with_lock)

# ---------------------------------------------------------------------------------------------
# The plan's lock: where it lives, what it is resolved from, reading it
# ---------------------------------------------------------------------------------------------

def lock_path(plan: BuildPlan) -> Path:
    return lock_file(plan.stack.path, plan.stack.name, plan.release.name, plan.target.name, plan.options)


def platform_of(plan: BuildPlan) -> str:
    base = parse_base_image(plan.target.base.ref)
    glibc = DISTRO_GLIBC.get((base.distro, base.release)) if base else None
    if glibc is None:
        raise LockError(f"stackbuild does not know the glibc of {plan.target.base.ref}, so it cannot lock for it")
    return targets.target(plan.target.name).lock_platform(glibc)


def lock_inputs(plan: BuildPlan) -> LockInputs:
    """Each layer's top-level requirements, in layer order, with the Python, platform and date."""
    groups = [("bootstrap", tuple(p.requirement for p in plan.release.bootstrap)),
              ("torch", tuple(p.requirement for p in (plan.target.torch, *plan.release.with_torch)))]
    groups += [("toolkit", plan.toolkit)]
    groups += [(f"compiled:{step.pin.name}", tuple(p.requirement for p in (*step.requires, step.pin)))
               for step in plan.compiled]
    groups += [("packages", tuple(p.requirement for p in plan.packages)),
               ("last", tuple(p.requirement for p in plan.last_packages))]
    return LockInputs(plan.label, plan.target.python, platform_of(plan), f"{plan.release.date}T23:59:59Z",
                      tuple((k, reqs) for k, reqs in groups if reqs))


def lock_required(plan: BuildPlan) -> bool:
    """Whether this target must have a lock: its stack has locks, and nothing keeps this one from one.

    What cannot be locked here stays unlocked: torch from the PyTorch index (the 2023 cuda targets)
    and git pins (github.com). A profile without any lock (a user's own) builds unlocked, as before.
    """
    pins = (plan.target.torch, *plan.release.with_torch, *plan.packages, *plan.last_packages,
            *(p for step in plan.compiled for p in (*step.requires, step.pin)))
    if plan.target.torch_index or any(p.url for p in pins):
        return False
    folder = lock_path(plan).parent
    try:
        return any(folder.glob(f"{plan.stack.name}@*.txt"))
    except OSError:
        return False


def load_lock(plan: BuildPlan) -> Lock | None:
    """The plan's lock, None when it has none; LockError when it is unreadable or stale."""
    path = lock_path(plan)
    if not os.path.lexists(path):
        if lock_required(plan):
            raise LockError(f"{path} is missing: {plan.spec} ({plan.target.name}) is locked everywhere else and "
                            f"would build unlocked; restore it, or run `stackbuild lock {plan.spec} --target "
                            f"{plan.target.name}`")
        return None
    lock = read_lock(path)  # a folder, FIFO or unreadable file is a LockError, never an unlocked build
    problems = lock_problems(lock, lock_inputs(plan))
    if problems:
        raise LockError(f"{path} does not fit {plan.spec} ({plan.target.name}) any more: " + "; ".join(problems)
                        + f"\nrun `stackbuild lock {plan.spec} --target {plan.target.name}` to make it again")
    return lock
