"""Locks: every package an image installs, with its hashes, resolved as of the release's date.

One lock file per stack x release x target (x options), in ``locks/`` beside the profile. Its
header records what it was resolved from - the Python, the platform (the base's glibc), the date
and each layer's top-level requirements - and its body has one section per Dockerfile layer with
the packages that layer installs. The body is a valid requirements file: ``pip install --no-deps
--require-hashes -r`` installs all of it.

``stackbuild lock`` makes one with uv (``uv pip compile``): it resolves for the image's Python and
platform without that Python here, and ignores whatever was published after the release's date
(the profile's own pins are exempt: they were chosen on purpose). torch and what it needs are
resolved first, as of torch's own release on PyPI, so every release on the same torch, Python and
platform gets the same torch layer and shares it; the rest is resolved around it. Each layer gets
the packages its requirements need that no earlier layer installed, so the layers cache as before.

A plan loads its lock and refuses a stale one (``LockError``): a profile edited without locking
again must not build what the old lock says.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from .compat import DISTRO_GLIBC, parse_base_image
from .errors import LockError
from .targets import target

if TYPE_CHECKING:
    from .config import Settings
    from .plan import BuildPlan

FORMAT = "stackbuild-lock 1"
SECTION = re.compile(r"^# \[(?P<key>[a-z0-9:._-]+)\]$")
INPUT = re.compile(r"^# input (?P<key>[a-z0-9:._-]+): (?P<req>.+)$")
FIELD = re.compile(r"^# (?P<name>format|stack|python|platform|exclude-newer|torch-exclude-newer|resolver): "
                   r"(?P<value>.+)$")
HASH = re.compile(r"^--hash=(sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class LockedPackage:
    """One locked distribution: ``name==version`` with its hashes, or a git pin (no hash possible)."""

    name: str  # canonical (PEP 503)
    version: str | None
    requirement: str
    hashes: tuple[str, ...]

    @property
    def is_git(self) -> bool:
        return "git+" in self.requirement

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
        return "\n".join(head) + "\n" + "".join(body)


# ---------------------------------------------------------------------------------------------
# Where a lock lives and what it is made from
# ---------------------------------------------------------------------------------------------

def lock_name(plan: BuildPlan) -> str:
    return f"{plan.spec}-{plan.target.name}" + "".join(f"+{o}" for o in plan.options) + ".txt"


def lock_path(plan: BuildPlan) -> Path:
    return plan.stack.path.parent / "locks" / lock_name(plan)


def platform_of(plan: BuildPlan) -> str:
    base = parse_base_image(plan.target.base.ref)
    glibc = DISTRO_GLIBC.get((base.distro, base.release)) if base else None
    if glibc is None:
        raise LockError(f"stackbuild does not know the glibc of {plan.target.base.ref}, so it cannot lock for it")
    return target(plan.target.name).lock_platform(glibc)


def lock_inputs(plan: BuildPlan) -> LockInputs:
    """Each layer's top-level requirements, in layer order, with the Python, platform and date."""
    groups = [("bootstrap", tuple(p.requirement for p in plan.release.bootstrap)),
              ("torch", tuple(p.requirement for p in (plan.target.torch, *plan.release.with_torch)))]
    groups += [(f"compiled:{step.pin.name}", tuple(p.requirement for p in (*step.requires, step.pin)))
               for step in plan.compiled]
    groups += [("packages", tuple(p.requirement for p in plan.packages)),
               ("last", tuple(p.requirement for p in plan.last_packages))]
    spec = f"{plan.spec} ({plan.target.name}{''.join(f' +{o}' for o in plan.options)})"
    return LockInputs(spec, plan.target.python, platform_of(plan), f"{plan.release.date}T23:59:59Z",
                      tuple((k, reqs) for k, reqs in groups if reqs))


# ---------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------

def parse_lock(text: str, where: str) -> Lock:
    """Parse a lock file; LockError naming the line when it is not one."""
    if f"# format: {FORMAT}" not in text.splitlines():
        raise LockError(f"{where}: not a stackbuild lock (no '# format: {FORMAT}' line); make it with `stackbuild lock`")
    fields: dict[str, str] = {}
    inputs: list[tuple[str, str]] = []
    groups: list[tuple[str, list[LockedPackage]]] = []
    entry: list[str] = []
    entry_line = 0

    def finish() -> None:
        if not entry:
            return
        words = " ".join(entry).split()
        hashes = []
        for word in words:
            match = HASH.match(word)
            if word.startswith("--") and not match:
                raise LockError(f"{where}:{entry_line}: unexpected option '{word}' in a lock entry")
            if match:
                hashes.append(match[1])
        requirement = " ".join(w for w in words if not w.startswith("--"))
        name, _, version = requirement.partition("==")
        if " @ " in requirement:
            name, version = requirement.split(" @ ", 1)[0], ""
        if not groups:
            raise LockError(f"{where}:{entry_line}: a package before the first [section]")
        groups[-1][1].append(LockedPackage(canonicalize_name(name.strip()), version.strip() or None, requirement,
                                           tuple(hashes)))
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
            elif match := INPUT.match(line):
                inputs.append((match["key"], match["req"]))
            elif match := FIELD.match(line):
                fields[match["name"]] = match["value"]
            continue
        entry_line, continued = number, line.endswith("\\")
        entry.append(line.rstrip("\\").strip())
        if not continued:
            finish()
    finish()
    missing = [k for k in ("stack", "python", "platform", "exclude-newer") if k not in fields]
    if missing:
        raise LockError(f"{where}: the lock's header lacks {', '.join(missing)}; make it again with `stackbuild lock`")
    grouped: dict[str, list[str]] = {}
    for key, req in inputs:
        grouped.setdefault(key, []).append(req)
    lock_in = LockInputs(fields["stack"], fields["python"], fields["platform"], fields["exclude-newer"],
                         tuple((k, tuple(v)) for k, v in grouped.items()))
    return Lock(lock_in, tuple((k, tuple(p)) for k, p in groups), fields.get("resolver", ""),
                fields.get("torch-exclude-newer", ""))


def read_lock(path: Path) -> Lock:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LockError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
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
        name, sep, version = req.partition("==")
        if sep and versions.get(canonicalize_name(name)) != version:
            problems.append(f"{req} is an input but the lock installs "
                            f"{versions.get(canonicalize_name(name), 'no such package')}")
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


def load_lock(plan: BuildPlan) -> Lock | None:
    """The plan's lock, None when it has none; LockError when it is unreadable or stale."""
    path = lock_path(plan)
    if not path.is_file():
        return None
    lock = read_lock(path)
    problems = lock_problems(lock, lock_inputs(plan))
    if problems:
        raise LockError(f"{path} does not fit {plan.spec} ({plan.target.name}) any more: " + "; ".join(problems)
                        + f"\nrun `stackbuild lock {plan.spec} --target {plan.target.name}` to make it again")
    return lock


# ---------------------------------------------------------------------------------------------
# Making a lock with uv
# ---------------------------------------------------------------------------------------------

def uv_binary() -> str:
    try:
        import uv  # the uv wheel from PyPI ships the binary
        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        raise LockError("uv is not installed: `pip install uv` (stackbuild depends on it)") from None


def _uv_command(uv: str, inputs: LockInputs, infile: Path, outfile: Path, settings: Settings | None,
                torch_index: str | None, constraints: Path | None = None, exclude_newer: str | None = None) -> list[str]:
    command = [uv, "pip", "compile", str(infile), "-o", str(outfile), "--python-version", inputs.python,
               "--python-platform", inputs.platform, "--exclude-newer", exclude_newer or inputs.exclude_newer,
               "--generate-hashes", "--no-header", "--no-annotate", "--no-config", "--quiet"]
    for name in sorted({canonicalize_name(re.split(r"[=@ ]", r, maxsplit=1)[0]) for r in inputs.requirements}):
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


def _run_uv(command: list[str], env: dict[str, str], spec: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LockError(f"cannot lock {spec}: uv did not run ({exc})") from None
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-12:]
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
    """The day torch's version (without a +cuXXX suffix) was first uploaded to PyPI, or None.

    Read from PyPI's JSON simple index (PEP 691/700 upload times), which uv reads as well.
    """
    version = plan.target.torch.version.split("+", 1)[0]
    context = ssl.create_default_context(cafile=str(settings.ca_bundle)) if settings and settings.ca_bundle else None
    request = urllib.request.Request("https://pypi.org/simple/torch/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as answer:
            files = json.load(answer).get("files") or []
    except (OSError, ValueError):
        return None
    times = sorted(f["upload-time"][:10] for f in files
                   if f.get("upload-time") and str(f.get("filename", "")).startswith(f"torch-{version}-"))
    return times[0] if times else None


def make_lock(plan: BuildPlan, settings: Settings | None = None) -> Lock:
    """Resolve the plan's complete package set with uv, split into its layers.

    First torch with the bootstrap tools, as of torch's release (or the release's date when PyPI
    cannot say), then everything with that held; then each layer's share of the whole.
    """
    inputs = lock_inputs(plan)
    uv = uv_binary()
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    if settings and settings.ca_bundle:
        env["SSL_CERT_FILE"] = str(settings.ca_bundle)
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
            command = _uv_command(uv, inputs, infile, outfile, settings, index, constraints, cutoff)
            for package in exempt:
                command += ["--exclude-newer-package", f"{package}=false"]
            _run_uv(command, env, spec)
            return outfile, parse_lock(_as_lock_text(outfile.read_text(), inputs), str(outfile)).packages()

        torch_reqs = [r for key, reqs in inputs.groups if key in ("bootstrap", "torch") for r in reqs]
        torch_file, torch_packages = resolve("torch", torch_reqs, None, torch_cutoff)
        exempt = [p.name for p in torch_packages if not p.is_git]
        full_file, full = resolve("all", inputs.requirements, torch_file)
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


def write_lock(path: Path, lock: Lock) -> None:
    """Write through a temporary file in the same folder: a failure leaves no half-written lock."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise LockError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(lock.text())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise LockError(f"cannot write {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------------------------------
# Differences
# ---------------------------------------------------------------------------------------------

def package_diff(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """(name, old version, new version) for every package added, removed or changed; sorted by name."""
    names: Iterable[str] = sorted(set(old) | set(new))
    return [(n, old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n)]
