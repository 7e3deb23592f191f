"""Proposing a stack's next release: the newest versions of its pins that work together as of a date.

``stackbuild propose STACK`` starts from the stack's default release and, for every pin (torch, the
bootstrap tools, with_torch, the compiled packages and what they require, packages, last_packages and
each option's), asks uv for the newest version the index offered as of the date (builder/lock/
resolution.py's ``newest_version``, the lock's own resolver and site settings). Then, in order, each
step may hold a pin back, and says why with its evidence:

1. the compatibility rules: torch must have a row in builder/profile/versions.py whose Python range
   covers every target (else torch stays in the newest line that has one), PyPI's torch carries one
   CUDA (the release's ``cuda`` follows it; a cuda target on an nvidia/cuda base of another CUDA moves
   to its slim base, with the compiler from wheels where PyPI has one), and the new block must load:
   every rule of the profile loader (flash-attn and DeepSpeed flags, GPU archs, xformers' torch, ...)
   holds, or the pin it names (or torch, whose move caused it) is held back with the loader's words;
2. resolving together: every image of the release (each target, each option) is locked with uv as
   `stackbuild lock` locks; if the newest set does not resolve, the moved pins are held back one at a
   time, last layer first, until it does, keeping uv's error as the evidence, and the held pin then
   climbs back to the newest version that still resolves;
3. unless ``build`` is off: the cpu image is built the way `stackbuild build` builds it, every smoke
   check runs, and the release's training scripts run through the runner of ``training_runner``; a
   failure holds the moved pins back one at a time (cheapest rebuild first) and names the one whose
   move caused it, keeping the build error or the failing check's output.

What passes is written at once: the release block into the profile (builder/profile/release_text.py
keeps the file's comments and layout; default only with ``make_default``), its locks through the lock
writer, and a Markdown report (builder/lock/report.py). A failed proposal writes only the report.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..config import Settings
from ..config import load_settings
from ..errors import BuildError, LockError, ProfileError, ProposeError, SmokeError, UsageError
from ..plan.build_plan import BuildPlan, lock_inputs, plan_build
from ..profile import targets as target_table
from ..profile import versions as compat
from ..profile.accelerators import ACCELERATORS
from ..profile.load import available_stacks, load_stack, stack_path
from ..profile.names import RELEASE
from ..profile.release_text import ReleaseEdit, insert_release
from ..profile.resolved import Held, Release, Stack
from ..safety.atomic import write_atomic
from ..safety.credentials import redact
from ..safety.files import MAX_PROFILE_BYTES, read_text
from ..safety.paths import display_path
from ..safety.printable import printable
from .format import Lock, read_lock
from .report import EVIDENCE_LINES, held_entries
from .resolution import lock_each, lock_selection, make_lock, newest_version

# Where a held-back move is tried first: the layer nearest the end of the image rebuilds least, and a
# leaf package is likelier to be the one a conflict can do without than torch, which everything sits on.
HOLD_ORDER = ("option", "last_packages", "packages", "compiled", "with_torch", "bootstrap", "torch")


@dataclass(frozen=True)
class Pinned:
    """One exact pin of the release the proposal starts from."""

    name: str  # canonical; "torch" for the release's torch field
    version: str
    section: str  # one of HOLD_ORDER


@dataclass
class Decision:
    """Where one pin goes: the newest version of the date, the one proposed, and why they differ."""

    name: str
    section: str
    current: str
    newest: str
    chosen: str
    why: str = ""
    evidence: tuple[str, ...] = ()
    step: str = ""  # what held it: rule, resolve, build, check

    @property
    def moved(self) -> bool:
        return self.chosen != self.current

    @property
    def held(self) -> bool:
        return self.chosen != self.newest


@dataclass
class Step:
    """One thing the proposal tried, for the report: what, whether it passed, and its evidence."""

    what: str
    ok: bool
    detail: tuple[str, ...] = ()


@dataclass
class Proposal:
    """A stack's proposed release: every pin's decision, what else changed, what was tried, what was written."""

    stack: str
    profile: Path
    base: str
    name: str
    date: str
    decisions: dict[str, Decision] = field(default_factory=dict)
    cuda: tuple[str, str] | None = None
    targets: dict[str, tuple[str, str]] = field(default_factory=dict)  # target -> (old base, new base)
    steps: list[Step] = field(default_factory=list)
    built: bool = False
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # (check, status, detail) of the passing image
    training: str = ""
    failure: str = ""
    review: list[str] = field(default_factory=list)  # lines of the new block that name a version that moved
    written: list[str] = field(default_factory=list)
    text: str | None = None
    locks: dict[Path, Lock] = field(default_factory=dict)
    carried: tuple[Held, ...] = ()  # the held entries of the release it starts from
    scratch: Scratch | None = None  # the candidate's profile and locks until they are written or dropped

    @property
    def ok(self) -> bool:
        return not self.failure

    @property
    def spec(self) -> str:
        return f"{self.stack}@{self.name}"

    def discard(self) -> None:
        """Drop the candidate's scratch folder without writing anything (what a caller does instead of
        ``write_proposal``)."""
        if self.scratch is not None:
            self.scratch.remove()
            self.scratch = None


# ---------------------------------------------------------------------------------------------
# Checking what was asked before anything runs
# ---------------------------------------------------------------------------------------------

def proposal_date(text: str | None, today: dt.date | None = None) -> str:
    """The date to resolve as of: YYYY-MM-DD, not in the future (UsageError otherwise); default today (UTC)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    if text is None:
        return today.isoformat()
    try:
        day = dt.date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
    except ValueError:
        day = None
    if day is None:
        raise UsageError(f"--date '{printable(text)}' is not a date: write it as YYYY-MM-DD, e.g. {today.isoformat()}")
    if day > today:
        raise UsageError(f"--date {text} is in the future: the index cannot say what it will offer then "
                         f"(use {today.isoformat()} or earlier)")
    return text


def proposal_name(stack: Stack, name: str | None, date: str) -> str:
    """The new release's name: ``name``, or the date's YYYY.MM; UsageError for a bad or existing one."""
    chosen = name or date[:7].replace("-", ".")
    if not RELEASE.match(chosen):
        raise UsageError(f"--name '{printable(chosen)}' is not a release name: use letters, digits, '.', '_' or '-', "
                         "like 2026.12")
    if chosen in stack.releases:
        raise UsageError(f"{stack.name} already has a release '{chosen}'"
                         + ("" if name else f" (the default name for {date})")
                         + ": pass --name with a new one, e.g. --name " + f"{chosen}.1")
    return chosen


def proposal_usage(spec: str | None, every: bool, make_default: bool, report: str | None) -> None:
    """UsageError for a combination of `stackbuild propose`'s options that means nothing."""
    if (spec is None) == (not every):
        raise UsageError("name one stack (stackbuild propose qlora) or pass --all")
    if spec is not None and "@" in spec:
        raise UsageError(f"'{printable(spec)}': propose starts from the stack's default release; name the stack "
                         "alone (its default_release says which release that is)")
    if report is not None and (os.path.isdir(report) or report.endswith("/")):
        raise UsageError(f"--report {printable(report)} is a folder: name the Markdown file to write")
    if report is not None and not Path(report).parent.is_dir():
        raise UsageError(f"--report {printable(report)}: folder {printable(str(Path(report).parent))} does not exist")


# ---------------------------------------------------------------------------------------------
# The pins, their newest versions, and the compatibility rules
# ---------------------------------------------------------------------------------------------

def release_pins(release: Release) -> list[Pinned]:
    """Every exact pin of ``release``, with the section a hold-back is tried in (git pins cannot move)."""
    out: dict[str, Pinned] = {"torch": Pinned("torch", release.torch, "torch")}

    def add(pins, section: str) -> None:
        for pin in pins:
            if pin.version and pin.name not in out:
                out[pin.name] = Pinned(pin.name, pin.version, section)

    add(release.bootstrap, "bootstrap")
    add(release.with_torch, "with_torch")
    add((p for c in release.compiled for p in (*c.requires, c.pin)), "compiled")
    add((p.pin for p in release.packages), "packages")
    add((p.pin for p in release.last_packages), "last_packages")
    add((p for o in release.options.values() for p in (*o.packages, *o.last_packages)), "option")
    return list(out.values())


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def _lines(error: Exception | str, limit: int = EVIDENCE_LINES) -> tuple[str, ...]:
    """An error's text as evidence lines: credentials masked, no blank lines, the last ``limit``."""
    lines = [printable(redact(line.strip())) for line in str(error).splitlines() if line.strip()]
    return tuple(line[:300] for line in lines[-limit:])


def newest_versions(pins: list[Pinned], plan: BuildPlan, inputs, date: str, settings: Settings | None
                    ) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Each pin's newest version as of ``date`` (``inputs``: ``plan``'s lock inputs with that cut-off) for its Python
    and platform: name -> (version, why, evidence); where uv finds none, the pin's own version with why."""

    def one(pin: Pinned) -> tuple[str, tuple[str, str, tuple[str, ...]]]:
        try:
            found = newest_version(pin.name, inputs, settings, plan.target.torch_index if pin.name == "torch" else None)
        except LockError as exc:
            return pin.name, (pin.version, f"uv found no version of {pin.name} as of {date}", _lines(exc))
        if _version(found) < _version(pin.version):  # the date is before the pin's own release: it stays
            return pin.name, (pin.version, "", ())
        return pin.name, (found, "", ())

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, pins))


def _torch_lines_for(release: Release) -> list[tuple[str, str]]:
    """(torch minor series, why not) for every series of the version table, newest first; why is '' where
    every target's Python is one its wheels and torch.compile support."""
    out = []
    for minor, line in sorted(compat.TORCH_LINES.items(), key=lambda kv: compat.version_tuple(kv[0]), reverse=True):
        why = ""
        for spec in release.targets.values():
            py = compat.version_tuple(spec.python)
            if not line.python_min <= py <= line.python_max:
                why = (f"torch {minor} has no wheels for Python {spec.python} of the {spec.name} target "
                       f"({compat.fmt_version(line.python_min)}-{compat.fmt_version(line.python_max)})")
            elif py > line.compile_python_max:
                why = f"torch {minor}'s torch.compile refuses Python {spec.python} of the {spec.name} target"
        out.append((minor, why))
    return out


def _series(series: str) -> str:
    """The requirement for every torch release of a minor series: '2.11' -> 'torch>=2.11,<2.12'."""
    major, minor = compat.version_tuple(series)[:2]
    return f"torch>={series},<{major}.{minor + 1}"


def torch_rule(release: Release, newest: str, newest_below: Callable[[str], str]) -> tuple[str, str, tuple[str, ...]]:
    """The torch the proposal may take: (version, why it is not ``newest``, evidence); ``newest_below(spec)``
    asks the index for the newest torch within a specifier."""
    def minor(version: str) -> str:
        parts = compat.version_tuple(version)
        return f"{parts[0]}.{parts[1]}"

    known = _torch_lines_for(release)
    want = minor(newest)
    rows = [m for m, _ in known]
    evidence = (f"builder/profile/versions.py TORCH_LINES has rows for torch {', '.join(reversed(rows))}",)
    if want in rows and not dict(known)[want]:
        return newest, "", ()
    if want not in rows:
        why = (f"torch {newest} has no row in builder/profile/versions.py (its Python range and CUDA builds are not "
               "known here): add the row from its wheels' metadata to let it move")
    else:
        why = dict(known)[want]
    current = compat.version_tuple(release.torch)
    for series, reason in known:
        if compat.version_tuple(series) > compat.version_tuple(want) or reason:
            continue
        if compat.version_tuple(series) < current[:2]:
            break
        return newest_below(_series(series)), why, evidence
    return release.torch, why, evidence


def torch_step_down(release: Release, refused: str, newest_below: Callable[[str], str]) -> str:
    """The torch to try when the profile's rules refuse ``refused``: the newest release of the next lower series
    the version table allows for every target, no lower than the release's own torch (which it returns when
    no series lies between)."""
    refused_series = compat.version_tuple(refused)[:2]
    current = compat.version_tuple(release.torch)
    for series, reason in _torch_lines_for(release):
        parts = compat.version_tuple(series)
        if parts >= refused_series or reason:
            continue
        if parts < current[:2]:
            break
        if parts == current[:2]:
            return release.torch
        try:
            return newest_below(_series(series))
        except LockError:
            continue
    return release.torch


def accelerator_moves(release: Release, torch: str) -> tuple[str | None, dict[str, tuple[str, str]], str]:
    """What a torch move takes with it: (the accelerator version PyPI's torch carries where it differs from the
    release's, each target moved off an accelerator base of the old version -> (base, python), why not
    possible or '')."""
    line = compat.torch_line(torch)
    if line is None or line.pypi_cuda == _release_cuda(release):
        return None, {}, ""
    moved: dict[str, tuple[str, str]] = {}
    slim = next((t for t in release.targets.values() if target_table.target(t.name).accelerator is None), None)
    for spec in release.targets.values():
        entry = target_table.target(spec.name)
        if entry.accelerator is None or spec.base.cuda is None:
            continue
        compiles = any(spec.name in c.targets for c in release.compiled)
        accelerator = entry.accelerator_entry
        if slim is None or entry.wheel_base_distro != slim.base.distro:
            return None, {}, (f"the {spec.name} target's base {spec.base.ref} carries {accelerator.label} "
                              f"{spec.base.cuda}, and no slim base is named to take {accelerator.label} "
                              f"{line.pypi_cuda} from torch's wheels")
        toolkit = accelerator.wheel_toolkit
        if compiles and (toolkit is None or not toolkit.has(line.pypi_cuda)):
            return None, {}, (f"the {spec.name} target compiles {accelerator.label} code on {spec.base.ref}; PyPI's "
                              f"torch {torch} carries {accelerator.label} {line.pypi_cuda}, whose compiler is not on "
                              f"PyPI, and {accelerator.base_name} of it cannot be pulled or checked here")
        moved[spec.name] = (slim.base.ref, slim.python)
    return line.pypi_cuda, moved, ""


# ---------------------------------------------------------------------------------------------
# The candidate: its profile text in a scratch folder, loaded, locked, built
# ---------------------------------------------------------------------------------------------

def _summary(proposal: Proposal) -> str:
    torch = proposal.decisions["torch"].chosen
    cuda = f" (CUDA {proposal.cuda[1]})" if proposal.cuda else ""
    moved = [d for d in proposal.decisions.values() if d.moved and d.name != "torch" and d.section != "bootstrap"]
    names = ", ".join(f"{d.name} {d.chosen}" for d in moved[:6]) + (" ..." if len(moved) > 6 else "")
    held = len(held_entries(proposal))
    return (f"Proposed {proposal.date} from {proposal.base}: torch {torch}{cuda}" + (f"; {names}" if names else "")
            + (f"; {held} pin{'s' if held != 1 else ''} held (see held)" if held else ""))


def _release_cuda(release: Release) -> str | None:
    """The release's version of the accelerator whose version PyPI's torch decides."""
    return release.accelerator_version(_accelerator_field())


def _accelerator_field() -> str:
    """The release field of the accelerator whose version PyPI's torch decides (TORCH_LINES' pypi_cuda)."""
    return ACCELERATORS["cuda"].version_field


def candidate_text(proposal: Proposal, base_text: str, make_default: bool) -> str:
    """The profile's text with the proposed release block inserted."""
    edit = ReleaseEdit(
        name=proposal.name, date=proposal.date, summary=_summary(proposal),
        versions={d.name: (d.current, d.chosen) for d in proposal.decisions.values()},
        accelerator=(_accelerator_field(), proposal.cuda[1]) if proposal.cuda else None,
        targets={t: new for t, new in proposal.targets.items()},
        drop_env=tuple(proposal.targets), held=held_entries(proposal), make_default=make_default)
    return insert_release(base_text, display_path(proposal.profile), proposal.base, edit)


@dataclass
class Scratch:
    """A folder holding the candidate profile (under the stack's name) and its locks, as `lock` writes them."""

    folder: Path
    profile: Path

    @staticmethod
    def make(stack: str) -> Scratch:
        folder = Path(tempfile.mkdtemp(prefix="stackbuild-propose-"))
        return Scratch(folder, folder / f"{stack}.yaml")

    def write(self, text: str) -> None:
        shutil.rmtree(self.folder / "locks", ignore_errors=True)
        self.profile.write_text(text)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _problem_pin(problem_path: str, release: str, data: dict) -> str | None:
    """The canonical name of the pin a loader problem's field path points at (``None``: not a pin)."""
    prefix = f"releases.{release}."
    if not problem_path.startswith(prefix):
        return None
    rest = re.sub(r"\[(\d+)\]", r".\1", problem_path[len(prefix):])  # the loader writes held[2].issue
    if rest.split(".")[0] in ("torch", _accelerator_field(), "targets"):  # what a torch move changes
        return "torch"
    node = data
    for part in rest.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            break
    if isinstance(node, dict):
        node = node.get("package") or node.get("requirement")
    match = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==", node) if isinstance(node, str) else None
    return canonicalize_name(match[1]) if match else None


def _hold(proposal: Proposal, name: str, why: str, evidence: tuple[str, ...], step: str, at: str | None = None) -> None:
    decision = proposal.decisions[name]
    decision.chosen = at or decision.current
    decision.why, decision.evidence, decision.step = why, evidence, step


def _revert_torch_extras(proposal: Proposal, release: Release) -> None:
    cuda, moved, _ = accelerator_moves(release, proposal.decisions["torch"].chosen)
    proposal.cuda = (_release_cuda(release), cuda) if cuda else None
    proposal.targets = {t: moved[t] for t in moved}


def load_candidate(proposal: Proposal, release: Release, base_text: str, scratch: Scratch, make_default: bool,
                   newest_below: Callable[[str], str], quiet: bool = False) -> Stack:
    """Write and load the candidate profile; each loader problem holds back the pin it names (or torch)."""
    import yaml

    for _ in range(len(proposal.decisions) + 1):
        text = candidate_text(proposal, base_text, make_default)
        scratch.write(text)
        try:
            stack = load_stack(str(scratch.profile))
        except ProfileError as exc:
            data = (yaml.safe_load(text).get("releases") or {}).get(proposal.name) or {}
            held_any = False
            for problem in exc.problems:
                name = _problem_pin(problem.path, proposal.name, data)
                if name is None or name not in proposal.decisions:
                    continue
                decision = proposal.decisions[name]
                if not decision.moved and proposal.decisions["torch"].moved:
                    name, decision = "torch", proposal.decisions["torch"]
                if not decision.moved:
                    continue
                why = f"the profile's rules refuse it: {problem.message}" + (f" ({problem.fix})" if problem.fix else "")
                lower = torch_step_down(release, decision.chosen, newest_below) if name == "torch" else None
                evidence = _lines(f"{problem.path}: {problem.message}")
                if decision.why.startswith("the profile's rules refuse it"):  # a lower version refused too
                    why = f"{decision.why}; and {name} {decision.chosen}: {problem.message}"
                    evidence = decision.evidence + evidence
                _hold(proposal, name, why, evidence, "rule", at=lower)
                if name == "torch":
                    _revert_torch_extras(proposal, release)
                held_any = True
                break
            if not held_any:
                raise ProposeError(f"the proposed {proposal.spec} does not load and no moved pin explains it:\n"
                                   + "\n".join(str(p) for p in exc.problems)) from None
            proposal.steps.append(Step(f"profile rules: held {name} at {proposal.decisions[name].chosen}", False,
                                       tuple(f"{p.path}: {p.message}" for p in exc.problems)))
            continue
        proposal.text = text
        if not quiet:
            proposal.steps.append(Step("profile rules: the proposed release loads", True))
        return stack
    raise ProposeError(f"the proposed {proposal.spec} does not load")  # pragma: no cover - bounded above


def _plans(scratch: Scratch, name: str) -> list[BuildPlan]:
    return lock_selection(str(scratch.profile), name, None, [])


def resolve_all(plans: list[BuildPlan], settings: Settings | None, memo: dict) -> LockError | None:
    """None when every image of the release resolves (uv, as `stackbuild lock` does), else the first error."""
    for plan in plans:
        try:
            make_lock(plan, settings, memo=memo, sections=False)
        except LockError as exc:
            return exc
    return None


def _hold_candidates(proposal: Proposal) -> list[Decision]:
    moved = [d for d in proposal.decisions.values() if d.moved]
    return sorted(moved, key=lambda d: (HOLD_ORDER.index(d.section), d.name))


def resolve_candidate(proposal: Proposal, release: Release, base_text: str, scratch: Scratch, make_default: bool,
                      settings: Settings | None, newest_below: Callable[[str], str], memo: dict) -> None:
    """Make the candidate resolve: hold moved pins back (greedily, last layer first) until uv resolves every image,
    then let each held pin climb back to the newest version that still resolves."""
    load_candidate(proposal, release, base_text, scratch, make_default, newest_below)
    error = resolve_all(_plans(scratch, proposal.name), settings, memo)
    if error is None:
        proposal.steps.append(Step("resolve: every image of the release resolves with the newest versions", True))
        return
    proposal.steps.append(Step("resolve: the newest set does not resolve", False, _lines(error)))
    first_error = error
    while error is not None:
        candidates = _hold_candidates(proposal)
        if not candidates:
            raise ProposeError(f"{proposal.spec} does not resolve even with every pin held back:\n{error}")
        culprit = None
        for decision in candidates:
            saved = (decision.chosen, decision.why, decision.evidence, decision.step, proposal.cuda,
                     dict(proposal.targets))
            _hold(proposal, decision.name, "", (), "resolve")
            if decision.name == "torch":
                _revert_torch_extras(proposal, release)
            load_candidate(proposal, release, base_text, scratch, make_default, newest_below, quiet=True)
            trial = resolve_all(_plans(scratch, proposal.name), settings, memo)
            if trial is None:
                culprit = decision
                break
            decision.chosen, decision.why, decision.evidence, decision.step, proposal.cuda, targets = saved
            proposal.targets = targets
        load_candidate(proposal, release, base_text, scratch, make_default, newest_below, quiet=True)
        if culprit is None:  # no single hold-back is enough: hold the likeliest one and look again
            culprit = candidates[0]
            _hold(proposal, culprit.name, "", (), "resolve")
            if culprit.name == "torch":
                _revert_torch_extras(proposal, release)
            load_candidate(proposal, release, base_text, scratch, make_default, newest_below, quiet=True)
            error = resolve_all(_plans(scratch, proposal.name), settings, memo)
        else:
            error = None
        culprit.why = (f"{culprit.name} {culprit.newest} does not resolve together with the rest of the proposal "
                       "(uv's error is the evidence)")
        culprit.evidence = _lines(first_error)
        proposal.steps.append(Step(f"resolve: held {culprit.name} at {culprit.current} (from {culprit.newest})",
                                   error is None))
        if error is None and culprit.name != "torch":
            _climb(proposal, culprit, release, base_text, scratch, make_default, settings, newest_below, memo)


def _climb(proposal: Proposal, decision: Decision, release: Release, base_text: str, scratch: Scratch,
           make_default: bool, settings: Settings | None, newest_below: Callable[[str], str], memo: dict,
           most: int = 40) -> None:
    """Raise a held pin towards its newest version: the releases between its pin and its newest (asked of the
    index one at a time, newest first), bisected for the newest with which the whole still resolves."""
    between: list[str] = []
    below = decision.newest
    while len(between) < most:
        try:
            version = newest_below(f"{decision.name}<{below},>{decision.current}")
        except LockError:
            break
        if _version(version) <= _version(decision.current) or _version(version) >= _version(below):
            break
        between.append(version)
        below = version
    best = None
    lo, hi = 0, len(between) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        decision.chosen = between[mid]
        load_candidate(proposal, release, base_text, scratch, make_default, newest_below, quiet=True)
        if resolve_all(_plans(scratch, proposal.name), settings, memo) is None:
            best, hi = between[mid], mid - 1
        else:
            lo = mid + 1
    decision.chosen = best or decision.current
    load_candidate(proposal, release, base_text, scratch, make_default, newest_below, quiet=True)
    if best:
        proposal.steps.append(Step(f"resolve: {decision.name} can move to {best} (not {decision.newest})", True))


def lock_candidate(proposal: Proposal, scratch: Scratch, settings: Settings | None, memo: dict) -> None:
    """Every image's lock, made by the lock machinery into the scratch folder (options prefer the plain lock)."""
    errors: list[str] = []
    lock_each(_plans(scratch, proposal.name), settings, False, [],
              lambda plan, relocked: None, lambda exc: errors.append(str(exc)))
    proposal.locks = {p: read_lock(p) for p in sorted((scratch.folder / "locks").glob("*.txt"))}
    proposal.steps.append(Step(f"locks: {len(proposal.locks)} made", True,
                               tuple(p.name for p in proposal.locks)))


# ---------------------------------------------------------------------------------------------
# Building and checking the cpu image (a seam for the training scripts' runner)
# ---------------------------------------------------------------------------------------------

def training_runner() -> Callable | None:
    """The runner of a release's training scripts (issue 24, item 2: ``builder.smoke.training.run_training``,
    called as ``run_training(engine, image, release, target)`` and answering ``(report, logs)``: a smoke report
    with one result per training entry, and each entry's output), or None where this version of stackbuild has
    none: the proposal then says that no training script ran."""
    try:
        module = importlib.import_module("builder.smoke.training")
    except ImportError:
        return None
    return getattr(module, "run_training", None)


@dataclass(frozen=True)
class Verdict:
    """One build-and-check of the candidate: passed, or what failed with its evidence."""

    ok: bool
    what: str = ""
    evidence: tuple[str, ...] = ()
    checks: tuple[tuple[str, str, str], ...] = ()
    training: str = ""


BuildAndCheck = Callable[[BuildPlan], Verdict]


def build_and_check(settings: Settings, on_event: Callable = lambda event: None) -> BuildAndCheck:
    """The real build-and-check: the cpu image built as `stackbuild build` builds it (no registry), every smoke
    check in a network-less container, then the training scripts through ``training_runner``."""
    from ..engine import connect as engines
    from ..images.build import build_image
    from ..render.dockerfile import render_context
    from ..smoke.run import run_smoke

    def run(plan: BuildPlan) -> Verdict:
        engine = engines.connect(kind=settings.engine, builder=settings.builder)
        try:
            result = build_image(render_context(plan), settings, engine=engine, use_registry=False, on_event=on_event)
        except BuildError as exc:
            return Verdict(False, f"the cpu image does not build: {exc.reason}", _lines(exc, 20))
        image = result.ref.immutable
        try:
            report = run_smoke(engine, image)
        except SmokeError as exc:
            return Verdict(False, f"the smoke checks could not run: {exc}", _lines(exc))
        checks = tuple((r.check, r.status, r.detail) for r in report.results)
        if not report.ok:
            failed = report.failed
            names = ", ".join(r.check for r in failed) or f"runner exit {report.exit_code}"
            return Verdict(False, f"smoke checks failed: {names}",
                           tuple(f"{r.check}: {line}" for r in failed for line in _lines(r.detail, 6)), checks)
        runner = training_runner()
        if runner is None:
            return Verdict(True, checks=checks, training="not run: this version of stackbuild has no runner for the "
                           "release's training scripts (issue 24, item 2; builder/smoke/training.py)")
        try:
            training, logs = runner(engine, image, plan.release, plan.target.name)
        except SmokeError as exc:
            return Verdict(False, f"the training scripts could not run: {exc}", _lines(exc), checks)
        if not training.ok:
            failed = training.failed
            return Verdict(False, "training scripts failed: " + ", ".join(r.check for r in failed), tuple(
                f"{r.check}: {line}" for r in failed
                for line in (*_lines(r.detail, 4), *_lines(logs.get(r.check, ""), 8))), checks)
        ran = ", ".join(f"{r.check} {r.status}" for r in training.results) or "none for this target"
        return Verdict(True, checks=checks, training=f"run: {ran}")

    return run


def build_candidate(proposal: Proposal, release: Release, base_text: str, scratch: Scratch, make_default: bool,
                    settings: Settings | None, newest_below: Callable[[str], str], memo: dict,
                    check: BuildAndCheck, retries: int) -> None:
    """Build and check the candidate's cpu image; on a failure hold moved pins back one at a time (last layer
    first) until one passes, and name the move that caused it. ProposeError when none does."""
    def attempt(label: str) -> Verdict:
        lock_candidate(proposal, scratch, settings, memo)
        plan = plan_build(load_stack(str(scratch.profile)), proposal.name, built)
        verdict = check(plan)
        proposal.steps.append(Step(f"build and check ({label}): " + ("passed" if verdict.ok else verdict.what),
                                   verdict.ok, verdict.evidence))
        return verdict

    built = target_table.for_host(False)
    if built not in release.targets:
        raise ProposeError(f"{proposal.stack}@{proposal.base} has no {built} target to build and check; pass --no-build")
    verdict = attempt("the proposal")
    if verdict.ok:
        proposal.built, proposal.checks, proposal.training = True, list(verdict.checks), verdict.training
        return
    first = verdict
    for decision in _hold_candidates(proposal)[:retries]:
        saved = (decision.chosen, decision.why, decision.evidence, decision.step, proposal.cuda, dict(proposal.targets))
        _hold(proposal, decision.name, "", (), "build")
        if decision.name == "torch":
            _revert_torch_extras(proposal, release)
        load_candidate(proposal, release, base_text, scratch, make_default, newest_below, quiet=True)
        if resolve_all(_plans(scratch, proposal.name), settings, memo) is None:
            trial = attempt(f"{decision.name} held at {decision.current}")
            if trial.ok:
                decision.why = (f"with {decision.name} {decision.newest} {first.what}; with {decision.current} "
                                "everything passes")
                decision.evidence = first.evidence
                decision.step = "check" if "smoke" in first.what or "training" in first.what else "build"
                proposal.built, proposal.checks, proposal.training = True, list(trial.checks), trial.training
                return
        decision.chosen, decision.why, decision.evidence, decision.step, proposal.cuda, targets = saved
        proposal.targets = targets
    load_candidate(proposal, release, base_text, scratch, make_default, newest_below, quiet=True)
    raise ProposeError(f"{proposal.spec}: {first.what}, and holding back any one moved pin "
                       f"({', '.join(d.name for d in _hold_candidates(proposal)[:retries])}) did not fix it:\n"
                       + "\n".join(first.evidence))


# ---------------------------------------------------------------------------------------------
# The whole proposal, and writing it
# ---------------------------------------------------------------------------------------------

def _review_lines(proposal: Proposal) -> list[str]:
    """Lines of the new block that still name an old version of something that moved (prose to read again)."""
    if proposal.text is None:
        return []
    block = proposal.text.split(f'"{proposal.name}":', 1)[-1]
    block = block.split("\n    held:", 1)[0]
    words = []
    for d in proposal.decisions.values():
        if d.moved and d.current.split(".")[:2] != d.chosen.split(".")[:2]:
            words.append(re.compile(rf"(?i)\b{re.escape(d.name)}[ =]=?{re.escape('.'.join(d.current.split('.')[:2]))}\b"))
    if proposal.cuda:
        words.append(re.compile(rf"\bCUDA {re.escape(proposal.cuda[0])}\b"))
    return [line.strip() for line in block.splitlines()
            if any(w.search(line) for w in words) and not line.strip().startswith("summary:")]


def propose(spec: str, date: str | None = None, name: str | None = None, *, build: bool = True,
            make_default: bool = False, settings: Settings | None = None, check: BuildAndCheck | None = None,
            retries: int = 4, on_step: Callable[[Step], None] = lambda step: None) -> Proposal:
    """Propose the next release of one stack (its name or profile path); see the module's docstring. Raises
    SelectionError/UsageError before anything runs; a proposal that fails returns with ``failure`` set."""
    stack = load_stack(spec)
    day = proposal_date(date)
    new_name = proposal_name(stack, name, day)
    base = stack.release(None)
    profile = stack_path(spec).resolve()
    proposal = Proposal(stack.name, profile, base.name, new_name, day, carried=base.held)
    steps = proposal.steps

    class Logged(list):
        def append(self, step: Step) -> None:  # every step goes to the caller as it happens
            super().append(step)
            on_step(step)

    proposal.steps = Logged(steps)
    base_text = read_text(profile, MAX_PROFILE_BYTES)
    built = target_table.for_host(False)  # the target without a GPU: what CI and this proposal build and check
    target = built if built in base.targets else target_table.ordered(base.targets)[0]
    plan = plan_build(stack, base.name, target, with_lock=False)
    inputs = replace(lock_inputs(plan), exclude_newer=f"{day}T23:59:59Z")

    def newest_below(requirement: str) -> str:
        return newest_version(requirement, inputs, settings)

    pins = release_pins(base)
    found = newest_versions(pins, plan, inputs, day, settings)
    for pin in pins:
        newest, why, evidence = found[pin.name]
        proposal.decisions[pin.name] = Decision(pin.name, pin.section, pin.version, newest, newest, why, evidence,
                                                "index" if why else "")
    steps_text = tuple(f"{d.name} {d.current} -> {d.newest}" for d in proposal.decisions.values() if d.newest != d.current)
    proposal.steps.append(Step(f"newest versions as of {day}: {len(steps_text)} of {len(pins)} pins have a newer one",
                               True, steps_text))
    torch = proposal.decisions["torch"]
    try:
        chosen, why, evidence = torch_rule(base, torch.newest, newest_below)
    except LockError as exc:
        chosen, why, evidence = base.torch, "the newest torch of the known series could not be found", _lines(exc)
    if _version(chosen) < _version(base.torch):
        chosen = base.torch
    torch.chosen = chosen
    if why:
        torch.why, torch.evidence, torch.step = why, evidence, "rule"
    cuda, moved, blocked = accelerator_moves(base, torch.chosen)
    if blocked:
        _hold(proposal, "torch", f"torch {torch.chosen} would move CUDA: {blocked}",
              (f"PyPI's torch {torch.chosen} carries CUDA {compat.torch_line(torch.chosen).pypi_cuda}",), "rule")
        cuda, moved = None, {}
    proposal.cuda = (_release_cuda(base), cuda) if cuda else None
    proposal.targets = moved
    proposal.steps.append(Step(f"compatibility rules: torch {torch.chosen}" + (f" (CUDA {cuda})" if cuda else "")
                               + (f", held from {torch.newest}" if torch.held else ""), True,
                               ((torch.why,) if torch.why else ()) + torch.evidence))
    scratch = Scratch.make(stack.name)
    memo: dict = {}
    try:
        resolve_candidate(proposal, base, base_text, scratch, make_default, settings, newest_below, memo)
        if build:
            build_candidate(proposal, base, base_text, scratch, make_default, settings, newest_below, memo,
                            check or build_and_check(settings or load_settings()), retries)
        else:
            lock_candidate(proposal, scratch, settings, memo)
            proposal.training = "not run (--no-build)"
        proposal.review = _review_lines(proposal)
    except (ProposeError, LockError, ProfileError) as exc:
        proposal.failure = str(exc)
        proposal.steps.append(Step("the proposal failed", False, _lines(exc, 30)))
        scratch.remove()
    except BaseException:  # no engine, Ctrl-C: nothing is written, and the scratch folder goes
        scratch.remove()
        raise
    proposal.scratch = scratch
    return proposal


def write_proposal(proposal: Proposal) -> list[str]:
    """Write a passing proposal: its locks beside the profile, then the profile; all or nothing."""
    scratch = proposal.scratch
    written: list[Path] = []
    try:
        if not proposal.ok or proposal.text is None:
            return []
        for path, lock in proposal.locks.items():
            real = proposal.profile.parent / "locks" / path.name
            if os.path.lexists(real):
                raise ProposeError(f"{display_path(real)} exists already: a lock of a release that does not exist; "
                                   "remove it and propose again")
            write_atomic(real, lock.text(), ProposeError, make_folder=True)
            written.append(real)
        write_atomic(proposal.profile, proposal.text, ProposeError)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        if scratch is not None:
            scratch.remove()
    proposal.written = [display_path(p) for p in (*written, proposal.profile)]
    return proposal.written


def check_proposal_input(stacks: list[str], date: str | None, name: str | None) -> None:
    """Every stack loads, the date is one, and each new release's name is free: before anything runs."""
    day = proposal_date(date)
    for spec in stacks:
        proposal_name(load_stack(spec), name, day)


def proposal_stacks(spec: str | None) -> list[str]:
    """The stacks to propose for: the one named, or every shipped stack (--all)."""
    return [spec] if spec else available_stacks()
