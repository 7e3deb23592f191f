"""The lock file format: parse, write and check one, knowing nothing of plans or of how it was made.

A lock records what it was resolved from - the stack, the Python, the platform (the base's glibc),
the date and each layer's top-level requirements - and has one section per Dockerfile layer with
the packages that layer installs. Its body is a valid requirements file: ``pip install --no-deps
--require-hashes -r`` installs all of it. Locking (builder/lock/resolution.py) makes one; a plan
(builder/plan/build_plan.py) reads its own.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..errors import LockError
from ..safety.atomic import write_atomic
from .seal import check_seal, seal_lines
from ..safety.printable import printable
from ..safety.files import MAX_LOCK_BYTES, read_text

LOCKS_FOLDER = "locks"  # beside the profile
FORMAT = "stackbuild-lock 1"
SECTION = re.compile(r"^# \[(?P<key>[a-z0-9:._-]+)\]\Z")
INPUT = re.compile(r"^# input (?P<key>[a-z0-9:._-]+): (?P<req>.+)\Z")
FIELD = re.compile(r"^# (?P<name>format|stack|python|platform|exclude-newer|torch-exclude-newer|resolver): "
                   r"(?P<value>.+)\Z")
HASH = re.compile(r"^--hash=(sha256:[0-9a-f]{64})\Z")


@dataclass(frozen=True)
class LockedPackage:
    """One locked distribution: ``name==version`` with its hashes, or a git pin (no hash possible)."""

    name: str  # canonical (PEP 503)
    version: str | None
    requirement: str
    hashes: tuple[str, ...]

    @property
    def is_git(self) -> bool:
        """A git pin: the parser admits one only where the lock's inputs declare it, at that commit."""
        return self.version is None and GIT_ENTRY.match(self.requirement) is not None

    def text(self) -> str:
        if not self.hashes:
            return self.requirement + "\n"
        return " \\\n".join([self.requirement, *(f"    --hash={h}" for h in self.hashes)]) + "\n"


@dataclass(frozen=True)
class LockInputs:
    """What a lock is resolved from; a lock is stale when the profile's inputs differ."""

    stack: str
    python: str
    platform: str
    exclude_newer: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (layer key, top-level requirements)

    def lines(self) -> list[str]:
        out = [f"# stack: {self.stack}", f"# python: {self.python}", f"# platform: {self.platform}",
               f"# exclude-newer: {self.exclude_newer}"]
        out += [f"# input {key}: {req}" for key, reqs in self.groups for req in reqs]
        return out

    @property
    def requirements(self) -> list[str]:
        return [req for _, reqs in self.groups for req in reqs]


@dataclass(frozen=True)
class Lock:
    inputs: LockInputs
    groups: tuple[tuple[str, tuple[LockedPackage, ...]], ...]  # (layer key, packages), in layer order
    resolver: str = ""
    torch_exclude_newer: str = ""  # the cut-off the [torch] section was resolved with (torch's own release)

    def packages(self) -> list[LockedPackage]:
        return [p for _, packages in self.groups for p in packages]

    def versions(self) -> dict[str, str]:
        """name -> version (a git pin's version is its URL)."""
        return {p.name: p.version or p.requirement.split(" @ ", 1)[-1] for p in self.packages()}

    def group(self, key: str) -> tuple[LockedPackage, ...]:
        return dict(self.groups).get(key, ())

    def git_pins(self) -> list[LockedPackage]:
        return [p for p in self.packages() if p.is_git]

    def text(self) -> str:
        head = [f"# stackbuild lock of {self.inputs.stack}: every package the image installs, with hashes.",
                f"# Made by `stackbuild lock` ({self.resolver}); do not edit: change the profile, then lock again.",
                f"# format: {FORMAT}", *self.inputs.lines()]
        if self.torch_exclude_newer:
            head.append(f"# torch-exclude-newer: {self.torch_exclude_newer}")
        if self.resolver:
            head.append(f"# resolver: {self.resolver}")
        body = []
        for key, packages in self.groups:
            body.append(f"\n# [{key}]\n")
            body.extend(p.text() for p in packages)
        unsealed = "\n".join(head) + "\n" + "".join(body)
        return "\n".join([*head, *seal_lines(unsealed)]) + "\n" + "".join(body)


def lock_file(profile: Path, stack: str, release: str, target: str, options: Iterable[str] = ()) -> Path:
    """Where the lock of one stack x release x target (x options) lives: ``locks/`` beside the profile."""
    name = f"{stack}@{release}-{target}" + "".join(f"+{o}" for o in options) + ".txt"
    return profile.parent / LOCKS_FOLDER / name


# What the resolver writes, and nothing else (see parse_lock).
ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>[A-Za-z0-9.+!_-]+)\Z")
GIT_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?) @ (?P<url>git\+https://[A-Za-z0-9.-]+/"
                       r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+@[0-9a-f]{40})\Z")
INTRO = ("# stackbuild lock of ", "# Made by `stackbuild lock`")
SEAL_LINE = re.compile(r"^# sha256 (?:header|\[[a-z0-9:._-]+\]): [0-9a-f]{64}\Z")


def _refusal(words: list[str]) -> str:
    """Why an entry is not one the resolver writes, in words a reviewer knows."""
    text = " ".join(words)
    if words[0] in ("-e", "--editable") or words[0].startswith("--editable="):
        return "an editable install (-e)"
    if any(w.split("=", 1)[0] in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host",
                                  "--no-index", "--pre", "-r", "--requirement", "-c", "--constraint")
           or w.startswith("-i") for w in words):
        return "an index or file option"
    if ";" in text:
        return "an environment marker"
    if "git+" in text:
        return "a git URL that is not exactly one of the lock's inputs (a profile's git pin, at its commit)"
    if "://" in text or " @ " in text or text.startswith(("/", ".", "file:")):
        return "a URL or file requirement"
    if "[" in text:
        return "a requirement with extras"
    if any(w.startswith("--hash=") and not HASH.match(w) for w in words):
        return "a hash that is not --hash=sha256:<64 lowercase hex>"
    options = [w for w in words if w.startswith("-") and not HASH.match(w)]
    if options:
        return f"an option ({options[0]})"
    return "not NAME==VERSION"


def parse_lock(text: str, where: str) -> Lock:
    """Parse a lock file; LockError naming the line when it is not one.

    Strict: it accepts only what ``stackbuild lock`` writes. The header holds only the intro, the
    fields, the inputs and the seal; each entry is ``NAME==VERSION`` with one or more
    ``--hash=sha256:…`` and nothing else, or a git pin that is exactly one of the lock's own inputs
    (``NAME @ git+https://host/org/repo@<40-hex commit>``: a profile's git pin at its declared commit;
    lock_problems then holds the inputs to the profile's). A URL or file requirement, ``-e``, an
    index option (``-i URL``), an environment marker or extras is refused with its line, whatever
    the seal says.
    """
    if f"# format: {FORMAT}" not in text.splitlines():
        raise LockError(f"{where}: not a stackbuild lock (no '# format: {FORMAT}' line); make it with `stackbuild lock`")
    fields: dict[str, str] = {}
    inputs: list[tuple[str, str]] = []
    groups: list[tuple[str, list[tuple[int, list[str]]]]] = []
    entry: list[str] = []
    entry_line = 0
    again = "make it with `stackbuild lock`, never by editing it"

    def finish() -> None:
        if not entry:
            return
        if not groups:
            raise LockError(f"{where}:{entry_line}: a package before the first [section]")
        groups[-1][1].append((entry_line, " ".join(entry).split()))
        entry.clear()

    continued = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if continued:
            continued = line.endswith("\\")
            entry.append(line.rstrip("\\").strip())
            if not continued:
                finish()
            continue
        if not line:
            continue
        if line.startswith("#"):
            if match := SECTION.match(line):
                groups.append((match["key"], []))
            elif groups:
                raise LockError(f"{where}:{number}: a comment inside section [{groups[-1][0]}] "
                                f"({printable(line[:60])}); {again}")
            elif match := INPUT.match(line):
                inputs.append((match["key"], match["req"]))
            elif match := FIELD.match(line):
                if match["name"] in fields:
                    raise LockError(f"{where}:{number}: a second '# {match['name']}:' line; {again}")
                fields[match["name"]] = match["value"]
            elif not (SEAL_LINE.match(line) or line.startswith(INTRO)):
                raise LockError(f"{where}:{number}: {printable(line[:80])} is not a line of a lock's header; {again}")
            continue
        entry_line, continued = number, line.endswith("\\")
        entry.append(line.rstrip("\\").strip())
        if not continued:
            finish()
    finish()
    missing = [k for k in ("stack", "python", "platform", "exclude-newer") if k not in fields]
    if missing:
        raise LockError(f"{where}: the lock's header lacks {', '.join(missing)}; make it again with `stackbuild lock`")
    declared_git = {req for _, req in inputs if GIT_ENTRY.match(req)}
    locked: list[tuple[str, tuple[LockedPackage, ...]]] = []
    for key, entries in groups:
        packages = []
        for number, words in entries:
            packages.append(_entry(words, declared_git, f"{where}:{number}", f"[{key}]", again))
        locked.append((key, tuple(packages)))
    grouped: dict[str, list[str]] = {}
    for key, req in inputs:
        grouped.setdefault(key, []).append(req)
    lock_in = LockInputs(fields["stack"], fields["python"], fields["platform"], fields["exclude-newer"],
                         tuple((k, tuple(v)) for k, v in grouped.items()))
    return Lock(lock_in, tuple(locked), fields.get("resolver", ""), fields.get("torch-exclude-newer", ""))


def _entry(words: list[str], declared_git: set[str], where: str, section: str, again: str) -> LockedPackage:
    """One entry's words as a LockedPackage, or a LockError saying why the resolver never writes it."""
    requirement = " ".join(w for w in words if not HASH.match(w))
    hashes = tuple(m[1] for w in words if (m := HASH.match(w)))
    shown = printable(" ".join(words)[:120])
    if requirement in declared_git and not hashes:
        match = GIT_ENTRY.match(requirement)
        return LockedPackage(canonicalize_name(match["name"]), None, requirement, ())
    match = ENTRY.match(requirement)
    if match and hashes:
        try:
            Version(match["version"])
        except InvalidVersion:
            raise LockError(f"{where}: {shown} in {section}: {match['version']!r} is not a version; {again}") from None
        return LockedPackage(canonicalize_name(match["name"]), match["version"], requirement, hashes)
    if match:
        raise LockError(f"{where}: {shown} in {section} has no --hash: every locked file is hash-checked; {again}")
    if requirement in declared_git:
        raise LockError(f"{where}: {shown} in {section}: a git pin cannot have a hash; {again}")
    raise LockError(f"{where}: {shown} in {section} is not what `stackbuild lock` writes: {_refusal(words)}; {again}")


def read_lock(path: Path) -> Lock:
    """A lock file, its seal checked (lockseal.py): any edit since `stackbuild lock` made it is a LockError."""
    try:
        text = read_text(path, MAX_LOCK_BYTES)
    except (OSError, UnicodeDecodeError) as exc:
        raise LockError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    check_seal(text, str(path))
    return parse_lock(text, str(path))


def lock_problems(lock: Lock, expected: LockInputs) -> list[str]:
    """Why a lock does not fit the profile: its inputs differ, or its body contradicts them."""
    problems = []
    have, want = lock.inputs.lines(), expected.lines()
    if have != want:
        diff = [line for line in difflib.unified_diff(have, want, "lock", "profile", lineterm="", n=0)
                if not line.startswith("@@")]
        problems.append("the profile changed since the lock was made:\n" + "\n".join(f"  {d}" for d in diff))
    versions = lock.versions()
    for req in lock.inputs.requirements:
        if "==" not in req:
            continue
        # a pin (peft==0.21.2) or a release series with extras (cuda-toolkit[nvcc]==13.2.*)
        try:
            wanted = Requirement(req)
        except InvalidRequirement:
            problems.append(f"{printable(req[:120])} is an input but not a requirement")
            continue
        locked = versions.get(canonicalize_name(wanted.name))
        if locked is None or not wanted.specifier.contains(locked, prereleases=True):
            problems.append(f"{req} is an input but the lock installs {locked or 'no such package'}")
    for package in lock.packages():
        if not package.is_git and not package.hashes:
            problems.append(f"{package.requirement} has no hash")
    seen: dict[str, str] = {}
    for key, packages in lock.groups:
        for package in packages:
            if package.name in seen:
                problems.append(f"{package.name} is in both [{seen[package.name]}] and [{key}]")
            seen[package.name] = key
    unknown = [key for key, _ in lock.groups if key not in dict(expected.groups)]
    if unknown:
        problems.append(f"sections without inputs: {', '.join(unknown)}")
    return problems


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically: a failure leaves no half-written lock."""
    write_atomic(path, lock.text(), LockError, make_folder=True)


def package_diff(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """(name, old version, new version) for every package added, removed or changed; sorted by name."""
    names: Iterable[str] = sorted(set(old) | set(new))
    return [(n, old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n)]


@dataclass(frozen=True)
class LockChanges:
    """What moved from one lock to the next, per section, and the layers that rebuild for it."""

    sections: tuple[tuple[str, tuple[tuple[str, str | None, str | None], ...]], ...]  # (key, package_diff rows)
    rehashed: tuple[tuple[str, str], ...]  # (key, name): same version, other hashes
    rebuilt: tuple[str, ...]  # the first section whose text changed and every one after it, in layer order

    @property
    def moved(self) -> bool:
        return bool(self.rebuilt)


def lock_changes(old: Lock, new: Lock) -> LockChanges:
    """The difference between a lock and the one made after it (sections in the new lock's order).

    Docker caches a layer while its instruction, its copied files and every earlier layer are the
    same, so the first section whose text changed rebuilds and so does every section after it.
    """
    keys = [k for k, _ in new.groups] + [k for k, _ in old.groups if k not in dict(new.groups)]
    sections, rehashed = [], []
    for key in keys:
        before, after = {p.name: p for p in old.group(key)}, {p.name: p for p in new.group(key)}
        rows = package_diff({n: p.version or p.requirement for n, p in before.items()},
                            {n: p.version or p.requirement for n, p in after.items()})
        if rows:
            sections.append((key, tuple(rows)))
        rehashed += [(key, n) for n in sorted(set(before) & set(after))
                     if before[n].version == after[n].version and before[n].hashes != after[n].hashes]
    order = [k for k, _ in new.groups]
    changed = [i for i, k in enumerate(order) if "".join(p.text() for p in old.group(k))
               != "".join(p.text() for p in new.group(k)) or k not in dict(old.groups)]
    if [k for k, _ in old.groups if k in dict(new.groups)] != [k for k in order if k in dict(old.groups)]:
        changed.append(0)  # sections in another order: every layer differs
    return LockChanges(tuple(sections), tuple(rehashed), tuple(order[min(changed):]) if changed else ())


def resolution_problems(lock: Lock, resolved: Lock) -> list[str]:
    """Where a committed lock is not what resolving its inputs again, preferring its own versions, gives.

    The resolution must have the same packages at the same versions in the same sections, and every
    hash the lock records must be one the index publishes for that version (the resolution's hashes
    are the index's; a version may have gained files since, so the lock may record fewer).
    """
    problems = []
    if lock.torch_exclude_newer != resolved.torch_exclude_newer:
        problems.append(f"torch-exclude-newer is {lock.torch_exclude_newer or 'missing'}; torch's release on the "
                        f"index gives {resolved.torch_exclude_newer or 'none'}")
    where = {p.name: k for k, packages in resolved.groups for p in packages}
    found = {p.name: (k, p) for k, packages in resolved.groups for p in packages}
    for key, packages in lock.groups:
        for package in packages:
            shown = package.requirement
            if package.name not in found:
                problems.append(f"[{key}] {shown}: no such package in the resolution (added to the lock?)")
                continue
            other_key, other = found[package.name]
            if other.requirement != package.requirement:
                problems.append(f"[{key}] {shown}: the resolution has {other.requirement}")
            elif other_key != key:
                problems.append(f"[{key}] {shown}: the resolution puts it in [{other_key}]")
            forged = [h for h in package.hashes if h not in other.hashes]
            if forged and other.requirement == package.requirement:
                problems.append(f"[{key}] {shown}: {', '.join(forged)} is not a hash the index publishes for it")
    locked = {p.name for p in lock.packages()}
    problems += [f"[{where[n]}] {found[n][1].requirement}: in the resolution but not in the lock (removed from it?)"
                 for n in sorted(set(found) - locked)]
    return problems
