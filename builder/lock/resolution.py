"""Locking: resolve every package an image installs, with its hashes, as of the release's date.

One lock file per stack x release x target (x options), in ``locks/`` beside the profile; its
format is builder/lock/format.py's. ``stackbuild lock`` makes one with uv (``uv pip compile``): it resolves for the image's Python and
platform without that Python here, and ignores whatever was published after the release's date
(the profile's own pins are exempt: they were chosen on purpose). torch and what it needs are
resolved first, as of torch's own release on PyPI, so every release on the same torch, Python and
platform gets the same torch layer and shares it; the rest is resolved around it. Each layer gets
the packages its requirements need that no earlier layer installed, so the layers cache as before.

A plan loads its lock and refuses a stale one (``LockError``): a profile edited without locking
again must not build what the old lock says.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import ssl
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from ..profile import targets
from ..config import Settings
from ..errors import LockError, UsageError
from ..safety.credentials import redact
from ..safety.printable import printable
from .format import (FORMAT, Lock, LockChanges, LockedPackage, LockInputs, lock_changes, lock_file, lock_problems,
                       package_diff, parse_lock, read_lock, resolution_problems, write_lock)
from ..plan.build_plan import BuildPlan, lock_inputs, lock_path, lock_required, plan_build
from ..profile.load import available_stacks, load_stack
from ..safety.paths import display_path, stacks_dir


def uv_binary() -> str:
    try:
        import uv  # the uv wheel from PyPI ships the binary
        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        raise LockError("uv is not installed: `pip install uv` (stackbuild depends on it)") from None


def _uv_command(uv: str, inputs: LockInputs, infile: Path, outfile: Path, settings: Settings | None,
                torch_index: str | None, constraints: Path | None = None, exclude_newer: str | None = None,
                exempt_pins: bool = True) -> list[str]:
    command = [uv, "pip", "compile", str(infile), "-o", str(outfile), "--python-version", inputs.python,
               "--python-platform", inputs.platform, "--exclude-newer", exclude_newer or inputs.exclude_newer,
               "--no-header", "--no-annotate", "--no-config", "--quiet"]
    if exempt_pins:
        command.insert(command.index("--no-header"), "--generate-hashes")
        # a requirement's project name: an extra ("cuda-toolkit[nvcc]==13.2.2") is no part of it
        for name in sorted({canonicalize_name(re.split(r"[\[=@ ]", r, maxsplit=1)[0]) for r in inputs.requirements}):
            command += ["--exclude-newer-package", f"{name}=false"]  # the profile's own pins are chosen on purpose
    if settings and settings.pip_index_url:
        command += ["--index-url", settings.pip_index_url]
    for url in (settings.pip_extra_index_url.split() if settings and settings.pip_extra_index_url else []):
        command += ["--extra-index-url", url]
    if torch_index:
        command += ["--extra-index-url", torch_index, "--index-strategy", "unsafe-best-match"]
    if constraints:
        command += ["-c", str(constraints)]
    return command


def _uv_env(settings: Settings | None) -> dict[str, str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    if settings and settings.ca_bundle:
        env["SSL_CERT_FILE"] = str(settings.ca_bundle)
    return env


def newest_version(requirement: str, inputs: LockInputs, settings: Settings | None, torch_index: str | None = None
                   ) -> str:
    """The newest version of ``requirement`` (a name, or a name with a version range) that the index offered as of
    ``inputs.exclude_newer`` for the inputs' Python and platform: uv's choice for it alone (``--no-deps``), as a
    lock would resolve it, with no exemption from the date. LockError (uv's own words) when there is none."""
    uv = uv_binary()
    with tempfile.TemporaryDirectory(prefix="stackbuild-newest-") as tmp:
        infile, outfile = Path(tmp) / "newest.in", Path(tmp) / "newest.txt"
        infile.write_text(requirement + "\n")
        command = _uv_command(uv, inputs, infile, outfile, settings, torch_index, exempt_pins=False) + ["--no-deps"]
        _run_uv(command, _uv_env(settings), f"the newest {requirement} as of {inputs.exclude_newer[:10]}")
        name = canonicalize_name(re.split(r"[=<>!~ ;\[]", requirement, maxsplit=1)[0])
        for line in outfile.read_text().splitlines():
            pinned = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^]]*\])?==(\S+)", line.strip())
            if pinned and canonicalize_name(pinned[1]) == name:
                return pinned[2]
    raise LockError(f"uv found no version of {requirement} as of {inputs.exclude_newer[:10]}")


def _run_uv(command: list[str], env: dict[str, str], spec: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LockError(f"cannot lock {spec}: uv did not run ({redact(str(exc))})") from None
    if done.returncode != 0:
        tail = [redact(line) for line in done.stderr.splitlines() if line.strip()][-12:]
        text = "\n".join(tail)
        hint = ""
        if "github.com" in text:
            hint = " (git pins are resolved from github.com, which this machine cannot reach)"
        elif "download.pytorch.org" in text:
            hint = " (the torch of this target comes from download.pytorch.org, which this machine cannot reach)"
        raise LockError(f"cannot lock {spec}: uv failed{hint}:\n" + "\n".join(f"  {line}" for line in tail))


def _uv_version(uv: str) -> str:
    try:
        return subprocess.run([uv, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "uv"


def torch_release_date(plan: BuildPlan, settings: Settings | None) -> str | None:
    """The day torch's version (without a +cuXXX suffix) was first uploaded to the index, or None.

    Read from the index's JSON simple API (PEP 691/700 upload times), which uv reads as well: the
    site's ``pip_index_url`` when it has one, else PyPI.
    """
    version = plan.target.torch.version.split("+", 1)[0]
    index = (settings.pip_index_url if settings and settings.pip_index_url else "https://pypi.org/simple").rstrip("/")
    bundle = str(settings.ca_bundle) if settings and settings.ca_bundle else None
    return _first_upload(f"{index}/torch/", f"torch-{version}-", bundle)


@functools.lru_cache(maxsize=64)
def _first_upload(url: str, prefix: str, bundle: str | None) -> str | None:
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": "application/vnd.pypi.simple.v1+json"}
    if parts.username or parts.password:  # an index URL with credentials: send them as basic auth
        user = urllib.parse.unquote(parts.username or "")
        secret = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    context = ssl.create_default_context(cafile=bundle) if bundle and url.startswith("https:") else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60,
                                    context=context) as answer:
            files = json.load(answer).get("files") or []
    except (OSError, ValueError, AttributeError):
        return None
    times = sorted(f["upload-time"][:10] for f in files if isinstance(f, dict) and isinstance(f.get("upload-time"), str)
                   and str(f.get("filename", "")).startswith(prefix))
    return times[0] if times else None


def make_lock(plan: BuildPlan, settings: Settings | None = None, prefer: Lock | None = None,
              upgrade: Iterable[str] = (), memo: dict | None = None, sections: bool = True) -> Lock:
    """Resolve the plan's complete package set with uv, split into its layers.

    First torch with the bootstrap tools, as of torch's release (or the release's date when the
    index cannot say), then everything with that held; then each layer's share of the whole.
    With ``prefer`` (the previous lock), every resolution prefers its versions, as `uv pip compile`
    does with the pins of an existing output file: only what the changed inputs strictly require
    moves, though the index's view of a past date grows (files uploaded before it appear later).
    Packages named in ``upgrade`` get no preference.

    ``memo`` (a dict one command shares across its locks) keeps each distinct uv resolution's
    output, so the torch resolution many releases share runs once. Without ``sections`` the lock
    has one section, [all]: the versions without the layers (what drift needs).
    """
    held = {canonicalize_name(n) for n in upgrade}
    def pins(packages: Iterable[LockedPackage]) -> str:
        return "".join(f"{p.name}=={p.version}\n" for p in packages if p.version and p.name not in held)

    # the torch resolution prefers only the torch layer's pins, so releases that share it share its memo
    torch_preferences = pins(p for key, ps in (prefer.groups if prefer else ()) if key in ("bootstrap", "torch")
                             for p in ps)
    preferences = pins(prefer.packages() if prefer else ())
    inputs = lock_inputs(plan)
    uv = uv_binary()
    env = _uv_env(settings)
    spec = f"{plan.spec} ({plan.target.name})"
    index = plan.target.torch_index
    day = torch_release_date(plan, settings)
    torch_cutoff = f"{day}T23:59:59Z" if day else inputs.exclude_newer
    with tempfile.TemporaryDirectory(prefix="stackbuild-lock-") as tmp:
        folder = Path(tmp)

        exempt: list[str] = []  # packages held at the torch section's versions, whatever their date

        def resolve(name: str, requirements: list[str], constraints: Path | None, cutoff: str | None = None
                    ) -> tuple[Path, list[LockedPackage]]:
            infile, outfile = folder / f"{name}.in", folder / f"{name}.txt"
            infile.write_text("\n".join(requirements) + "\n")
            preferred = torch_preferences if name == "torch" else preferences
            outfile.write_text(preferred)  # uv reads an existing output file's pins as preferences
            command = _uv_command(uv, inputs, infile, outfile, settings, index, constraints, cutoff)
            for package in exempt:
                command += ["--exclude-newer-package", f"{package}=false"]
            key = (tuple(c.replace(tmp, "") for c in command), infile.read_text(), preferred,
                   constraints.read_text() if constraints else "")
            if memo is not None and key in memo:
                outfile.write_text(memo[key])
            else:
                _run_uv(command, env, spec)
                if memo is not None:
                    memo[key] = outfile.read_text()
            return outfile, parse_lock(_as_lock_text(outfile.read_text(), inputs), str(outfile)).packages()

        # torch's CUDA wheels and the compiler wheels installed beside them (the toolkit section) are one
        # CUDA release: resolved together, so a library both want (CCCL's headers: torch 2.15 through
        # nvshmem, the compiler through cuda-toolkit[cccl]) is taken at the toolkit's version
        torch_reqs = [r for key, reqs in inputs.groups if key in ("bootstrap", "torch", "toolkit") for r in reqs]
        torch_file, torch_packages = resolve("torch", torch_reqs, None, torch_cutoff)
        exempt = [p.name for p in torch_packages if not p.is_git]
        full_file, full = resolve("all", inputs.requirements, torch_file)
        if not sections:
            return Lock(inputs, (("all", tuple(full)),), _uv_version(uv), torch_cutoff)
        by_name = {p.name: p for p in full}
        groups: list[tuple[str, tuple[LockedPackage, ...]]] = []
        placed: set[str] = set()
        cumulative: list[str] = []
        for number, (key, reqs) in enumerate(inputs.groups):
            cumulative += reqs
            if number == len(inputs.groups) - 1:
                names = set(by_name)
            else:
                names = {p.name for p in resolve(f"part{number}", cumulative, full_file)[1]}
            stray = names - set(by_name)
            if stray:
                raise LockError(f"cannot lock {spec}: layer {key} resolved {', '.join(sorted(stray))}, "
                                "which the whole resolution does not have")
            groups.append((key, tuple(by_name[n] for n in sorted(names - placed))))
            placed |= names
    return Lock(inputs, tuple(groups), _uv_version(uv), torch_cutoff)


def _as_lock_text(uv_output: str, inputs: LockInputs) -> str:
    """uv's requirements output as a one-section lock, so one parser reads both."""
    return "\n".join([f"# format: {FORMAT}", *inputs.lines(), "# [all]", uv_output])


# ---------------------------------------------------------------------------------------------
# What `stackbuild lock` works on, and checking committed locks
# ---------------------------------------------------------------------------------------------

def lock_selection(name: str | None, release: str | None, target: str | None, options: list[str]) -> list[BuildPlan]:
    """The plans (read without their locks) that lock and lock --check work on: one stack (one release or
    all) or, with ``name`` None, every stack; each target (or ``target``), each with ``options`` or, without
    any, plain and with each option the target has on its own (`stackbuild build --with NAME`)."""
    stacks = [load_stack(n) for n in ([name] if name else available_stacks())]
    plans = []
    for stack in stacks:
        for rel in ([stack.release(release)] if release else stack.releases.values()):
            for tname in ([target] if target else targets.ordered(rel.targets)):
                plans.append(plan_build(stack, rel.name, tname, options, with_lock=False))
                if not options:
                    plans += [plan_build(stack, rel.name, tname, [o], with_lock=False)
                              for o, spec in rel.options.items() if tname in spec.targets]
    return plans


@dataclass(frozen=True)
class Relocked:
    """One `stackbuild lock`: the new lock, where it went, and what moved since the previous one."""

    lock: Lock
    path: Path
    changes: LockChanges | None  # None: no previous lock to compare with
    note: str = ""  # why the previous lock was not used as preferences


def previous_lock(plan: BuildPlan) -> tuple[Lock | None, str]:
    """The lock to prefer and compare with (its seal and format checked), or None and why not.

    The plan's own lock beside its profile. Without one: an option's first lock prefers the plain
    image's (the option adds packages and moves none, so every layer before the one that installs it
    is the plain image's, shared); and a copy of a shipped stack (a profile of a shipped stack's name
    elsewhere) prefers the shipped stack's lock of the same release, target and options (or the plain
    one): a user who copies stacks/qlora.yaml and bumps one pin gets only that pin moved, as the image
    built from the shipped lock caches every earlier layer.
    """
    own = lock_path(plan)
    plain = lock_path(plan_build(plan.stack, plan.release.name, plan.target.name, (), with_lock=False)) \
        if plan.options else None
    shipped = [lock_file(stacks_dir() / f"{plan.stack.name}.yaml", plan.stack.name, plan.release.name,
                         plan.target.name, options) for options in (plan.options, ())[:2 if plan.options else 1]]
    candidates = [own, *([plain] if plain else []), *(s for s in shipped if s not in (own, plain))]
    path = next((c for c in candidates if os.path.lexists(c)), None)
    if path is None:
        return None, ""
    what = "the previous lock" if path in (own, plain) else f"the shipped lock {display_path(path)}"
    try:
        lock = read_lock(path)
    except LockError as exc:
        return None, f"{what} is not used as preferences: {exc}"
    return lock, "" if path in (own, plain) else f"no lock beside the profile: preferring the versions of {what}"


def lock_and_write(plan: BuildPlan, settings: Settings | None, upgrade: bool = False,
                   upgrade_packages: Iterable[str] = (), memo: dict | None = None) -> Relocked:
    """Make the plan's lock, preferring the previous lock's versions unless ``upgrade``, and write it."""
    previous, note = previous_lock(plan)
    lock = make_lock(plan, settings, None if upgrade else previous, upgrade_packages, memo)
    path = lock_path(plan)
    write_lock(path, lock)
    return Relocked(lock, path, lock_changes(previous, lock) if previous else None, note)


@dataclass(frozen=True)
class LockCheck:
    """How one committed lock (or the want of one) stands against its profile."""

    state: str  # ok | unlocked | missing | stale | orphan | forged | unresolved
    label: str  # the plan's label; an orphan's path
    path: Path
    problems: tuple[str, ...] = ()
    drift: tuple[tuple[str, str | None, str | None], ...] = field(default=())  # a fresh resolution's moves


def check_locks(plans: list[BuildPlan], everything: bool) -> list[LockCheck]:
    """Each plan's lock checked against its profile; with ``everything``, lock files no plan names too."""
    checks = []
    expected = set()
    for plan in plans:
        path = lock_path(plan)
        expected.add(path)
        if not os.path.lexists(path):
            # locked everywhere else: a deleted lock is "missing", not "unlocked"
            checks.append(LockCheck("missing" if lock_required(plan) else "unlocked", plan.label, path))
            continue
        try:
            problems = lock_problems(read_lock(path), lock_inputs(plan))
        except LockError as exc:
            problems = [str(exc)]
        checks.append(LockCheck("stale" if problems else "ok", plan.label, path, tuple(problems)))
    if everything:
        folders = {p.parent for p in expected}
        for orphan in sorted(f for d in folders for f in d.glob("*.txt") if f not in expected):
            checks.append(LockCheck("orphan", display_path(orphan), orphan))
    return checks


def lock_check_error(checks: list[LockCheck], strict: bool) -> LockError | None:
    """The error `lock --check` ends with: stale, edited, missing or orphan locks, and with ``strict`` unlocked ones."""
    bad = [c.label for c in checks if c.state in ("stale", "missing", "orphan", "forged", "unresolved")]
    unlocked = [c.label for c in checks if c.state == "unlocked"]
    if not (bad or (strict and unlocked)):
        return None
    what = [f"{len(bad)} stale, edited, forged, missing or orphan: {', '.join(bad)}"] if bad else []
    what += [f"{len(unlocked)} unlocked: {', '.join(unlocked)}"] if strict and unlocked else []
    return LockError("locks do not fit their profiles - " + "; ".join(what)
                     + " (run `stackbuild lock STACK@RELEASE --target TARGET`)")


def _git(folder: Path, *args: str) -> str | None:
    """``git -C folder ARGS``'s output, or None when git is missing, the folder is no repository, or it fails."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, timeout=60,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


def base_lock(path: Path, base: str | None = None) -> tuple[Lock | None, str, list[dict[str, str]]]:
    """The lock at ``path`` as it was before the change under check, read from git: (the lock or None, the
    revision or why there is none, the versions of each other lock of its stack and release then).

    ``base`` names the revision (a pull request's base, the commit before a push); by default it is
    HEAD when the working tree changes the lock, else the parent of the last commit that changed it.
    Lines the change did not touch were checked when they changed; the lines it did are checked now.
    The other locks of the release (its other targets and options) count as they were at that
    revision: a lock made preferring a sibling's versions (an option's first lock, a cuda lock
    relocked to share its cpu twin's layers) takes them from there, never from the same change.
    """
    top = _git(path.parent, "rev-parse", "--show-toplevel")
    if top is None:
        return None, "not in a git repository", []
    folder = Path(top.strip())  # every path below is relative to the repository's top
    relative = os.path.relpath(os.path.realpath(path), os.path.realpath(folder)).replace(os.sep, "/")
    explicit = base is not None
    if base is None:
        if _git(folder, "ls-files", "--error-unmatch", "--", relative) is None:
            return None, "not committed", []
        changed = _git(folder, "diff", "--name-only", "HEAD", "--", relative)
        if changed:
            base = "HEAD"
        else:
            last = (_git(folder, "log", "-1", "--format=%H", "--", relative) or "").strip()
            if not last:
                return None, "no commit changed it", []
            base = f"{last}^"
    if base.startswith("-") or any(c.isspace() or ord(c) < 32 for c in base):
        raise UsageError(f"--base {printable(base)} is not a git revision")
    if _git(folder, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}") is None:
        if explicit:
            raise UsageError(f"--base {printable(base)}: no such commit in {printable(str(folder))} (fetch the "
                             "history it names, e.g. actions/checkout with fetch-depth: 0)")
        return None, f"no revision {printable(base)}", []
    at = path.name.find("@")
    release = path.name[:path.name.find("-", at) + 1] if at > 0 else path.name  # <stack>@<release>-<target>….txt
    siblings = []
    listed = _git(folder, "ls-tree", "--name-only", base, "--", relative.rsplit("/", 1)[0] + "/") or ""
    for name in listed.splitlines():
        if name != relative and name.rsplit("/", 1)[-1].startswith(release) and name.endswith(".txt"):
            text = _git(folder, "show", f"{base}:{name}")
            if text is None:
                continue
            try:
                siblings.append(parse_lock(text, name).versions())
            except LockError:
                continue
    text = _git(folder, "show", f"{base}:{relative}")
    if text is None:
        return None, f"new since {base}", siblings
    try:
        return parse_lock(text, f"{relative} at {base}"), base, siblings
    except LockError as exc:
        return None, f"unreadable at {base}: {exc}", siblings


def change_problems(committed: Lock, before: Lock | None, fresh: Lock, preferred: Lock | None,
                    siblings: list[dict[str, str]], cutoff: str) -> list[str]:
    """Where a line the change made is not what resolving the inputs as of the date gives.

    A package whose version is new since ``before`` (every package, without one) must have the
    version of the fresh resolution, of the resolution that prefers ``before``'s versions
    (``preferred``: what `stackbuild lock` makes from the previous lock), or of another lock of the
    release as it was before the change (``siblings``: what a lock preferring it takes). Any other
    version - another real release from before the date included - is a forgery, whatever the seal says.
    """
    old = before.versions() if before is not None else {}
    new = fresh.versions()
    kept = preferred.versions() if preferred is not None else {}
    problems = []
    versions = committed.versions()
    for key, packages in committed.groups:
        for package in packages:
            name, version = package.name, versions[package.name]
            if old.get(name) == version or version in (new.get(name), kept.get(name)) \
                    or any(sibling.get(name) == version for sibling in siblings):
                continue
            gives = [f"{name}=={new[name]}" if name in new else "no such package"]
            if name in kept and kept[name] != new.get(name):
                gives.append(f"{name}=={kept[name]} preferring the previous lock's versions")
            was = f" (the previous lock had {name}=={old[name]})" if name in old else ""
            problems.append(f"[{key}] {package.requirement}: a resolution of the inputs as of {cutoff} has "
                            f"{' or '.join(gives)}{was}")
    return problems


def resolve_check(plan: BuildPlan, check: LockCheck, settings: Settings | None, memo: dict | None = None,
                  base: str | None = None) -> LockCheck:
    """A fitting lock checked against the index: `lock --check --resolve`.

    Its inputs are resolved again, preferring the lock's own versions: the result must be the lock
    (same packages, versions and sections; each recorded hash one the index publishes), or the lock
    cannot be made from its inputs. Then every version the change under check made (since the lock's
    previous committed version, see ``base_lock``; every version of a lock git does not have) must
    be what resolving the inputs as of the date gives: afresh, or preferring the previous lock's
    versions, as `stackbuild lock` does. Anything else is forged, whatever its seal says. What a
    fresh resolution moves in the lines the change kept is drift, reported and not a failure (the
    index's view of a past date grows).
    """
    if check.state != "ok":
        return check
    try:
        committed = read_lock(check.path)
        before, _, siblings = base_lock(check.path, base)
        again = make_lock(plan, settings, prefer=committed, memo=memo)
        fresh = make_lock(plan, settings, memo=memo, sections=False)
        preferred = make_lock(plan, settings, prefer=before, memo=memo, sections=False) \
            if before is not None and before.versions() != committed.versions() else None
    except LockError as exc:
        return LockCheck("unresolved", check.label, check.path, (str(exc),))
    problems = resolution_problems(committed, again)
    problems += change_problems(committed, before, fresh, preferred, siblings, committed.inputs.exclude_newer)
    drift = tuple(package_diff(committed.versions(), fresh.versions()))
    return LockCheck("forged" if problems else "ok", check.label, check.path, tuple(problems), drift)


def resolve_checks(plans: list[BuildPlan], checks: list[LockCheck], settings: Settings | None,
                   workers: int = 4, base: str | None = None) -> list[LockCheck]:
    """resolve_check of every fitting lock, a few at a time (uv waits on the index more than on the CPU)."""
    by_path = {lock_path(plan): plan for plan in plans}
    memo: dict = {}

    def one(check: LockCheck) -> LockCheck:
        plan = by_path.get(check.path)
        return resolve_check(plan, check, settings, memo, base) if plan is not None else check

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, checks))


def check_upgrade_packages(plans: list[BuildPlan], names: list[str]) -> None:
    """UsageError for an --upgrade-package NAME that no selected plan's previous lock has."""
    if not names:
        return
    locked = {p.name for plan in plans for p in (previous_lock(plan)[0] or Lock(lock_inputs(plan), ())).packages()}
    unknown = [n for n in names if canonicalize_name(n) not in locked]
    if unknown:
        raise UsageError(f"--upgrade-package {printable(', '.join(unknown))}: not in the previous lock of "
                         f"{', '.join(plan.label for plan in plans[:3])}{' …' if len(plans) > 3 else ''} "
                         "(name a package the lock has; --upgrade moves every package)")


def lock_usage(spec: str | None, every: bool, check: bool, strict: bool, resolve: bool, upgrade: bool,
               upgrade_packages: list[str], base: str | None = None) -> None:
    """UsageError for a combination of `stackbuild lock`'s options that means nothing."""
    if spec is None and not (every or check):
        raise UsageError("name a stack (stackbuild lock qlora@2023.07), or pass --all or --check")
    if spec is not None and every:
        raise UsageError("--all locks every stack: name no stack with it")
    if strict and not check:
        raise UsageError("--strict goes with --check")
    if resolve and not check:
        raise UsageError("--resolve goes with --check (lock --check --resolve)")
    if base is not None and not resolve:
        raise UsageError("--base goes with --check --resolve (the revision the change under check started from)")
    if check and (upgrade or upgrade_packages):
        raise UsageError("--upgrade and --upgrade-package go with lock, not with --check")


def lock_each(plans: list[BuildPlan], settings: Settings | None, upgrade: bool, upgrade_packages: list[str],
              on_locked: Callable[[BuildPlan, Relocked], None], on_failed: Callable[[LockError], None]) -> None:
    """`stackbuild lock`: lock every plan in turn, sharing one memo of uv resolutions; a failure of one of
    several is reported through ``on_failed`` and the rest go on, then one LockError names them all."""
    check_upgrade_packages(plans, upgrade_packages)
    failed = []
    memo: dict = {}  # uv resolutions the selected locks share (the torch layer's) run once
    for plan in plans:
        try:
            relocked = lock_and_write(plan, settings, upgrade, upgrade_packages, memo)
        except LockError as exc:
            if len(plans) == 1:
                raise
            failed.append(plan.label)
            on_failed(exc)
            continue
        on_locked(plan, relocked)
    if failed:
        raise LockError(f"{len(failed)} of {len(plans)} could not be locked: {', '.join(failed)}")
