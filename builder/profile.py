"""Stack profiles: the strict raw file model and the resolved, frozen ``Stack``.

``load_stack`` reads ``stacks/<name>.yaml``, validates its shape (unknown keys are errors),
then checks what the shape cannot say: requirement syntax and exact pins, torch x CUDA x Python
combinations that exist, base images and the interpreter they ship, GPU arch lists against
nvcc and flash-attn, build flags that DeepSpeed and flash-attn need, environment variable names
and values, and known-issue ids. Every problem of a file is reported at once as
``stacks/x.yaml:LINE: field.path: problem (fix)``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError

from . import compat
from .errors import Problem, ProfileError, SelectionError
from .knowledge import CheckName, IssueId, KnownIssue, OneLine, load_knowledge_base
from .resources import display_path, stacks_dir
from .validation import Strict, dotted, problems_from_validation
from .yamlsrc import PathKey, YamlSource, load_yaml

TARGETS = ("cuda", "cpu")
Target = Literal["cuda", "cpu"]
NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
RELEASE_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Values land in `ENV K=V` and shell command prefixes: no quoting characters, `$` or whitespace.
ENV_VALUE = re.compile(r"^[A-Za-z0-9_./:;,=+@%-]*$")
APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PATCH_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py$")
ARCH = re.compile(r"^\d+\.\d+$")
GIT_URL = re.compile(r"^git\+https://[A-Za-z0-9.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?(?:\.git)?@(?P<rev>[^@/]+)$")
FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9_.-]{1,100}$")
SCRIPT_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py$")
FIX_VIA = ("apt", "pin", "build-flag", "env", "patch", "python", "base-image", "config", "run-option")


# --------------------------------------------------------------------------------------------
# Raw file model (what the YAML may say)
# --------------------------------------------------------------------------------------------


def _to_date(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _iso_date(value: str) -> str:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{value}' is not a date || write it as YYYY-MM-DD") from None
    return value


def _version_text(value: str) -> str:
    try:
        Version(value)
    except InvalidVersion:
        raise ValueError(f"'{value}' is not a version || write a version such as 2.0.1") from None
    if "+" in value:
        raise ValueError(f"'{value}' has a local version || name the plain release; the CUDA build follows from 'cuda'")
    return value


def _major_minor(value: str) -> str:
    if not re.fullmatch(r"\d+\.\d+", value):
        raise ValueError(f"'{value}' is not MAJOR.MINOR || write it like \"3.10\" or \"11.8\" (quoted)")
    return value


IsoDate = Annotated[str, BeforeValidator(_to_date), AfterValidator(_iso_date)]
VersionText = Annotated[str, AfterValidator(_version_text)]
MajorMinor = Annotated[str, AfterValidator(_major_minor)]


class RawFix(Strict):
    issue: IssueId
    via: Literal["apt", "pin", "build-flag", "env", "patch", "python", "base-image", "config", "run-option"]
    detail: OneLine


class RawFile(Strict):
    description: OneLine
    document: dict[str, Any] = Field(alias="json", description="The file's content, written as JSON.")


class RawPatch(Strict):
    id: IssueId
    summary: OneLine
    package: str
    file: str
    find: str
    replace: str
    count: int = 1
    fixes: IssueId


class RawCompiled(Strict):
    package: str
    why: OneLine
    targets: list[Target] = list(TARGETS)
    requires: list[str] = []
    no_build_isolation: bool
    memory_per_job_gib: int | None = None
    env: dict[Target, dict[str, str]] = {}


class RawPackage(Strict):
    requirement: str
    why: OneLine
    targets: list[Target] = list(TARGETS)


class RawTarget(Strict):
    base: str
    python: MajorMinor
    arch_list: list[str] = []
    env: dict[str, str] = {}


class RawOption(Strict):
    summary: OneLine
    targets: list[Target] = list(TARGETS)
    packages: list[str]
    fixes: list[RawFix] = []


class RawNamesake(Strict):
    """The project a stack is named after: its own training code is what every release must run."""

    repository: str = Field(description="The project's public repository, as owner/name on GitHub "
                            "(e.g. tloen/alpaca-lora).")
    scripts: list[str] = Field(description="Its training scripts, as paths inside the repository "
                               "(e.g. finetune.py); they are run unchanged.")


class RawNamesakeUnable(Strict):
    """A script that this release cannot run on some targets, said in the profile instead of breaking silently."""

    scripts: list[str] = Field(description="Which of the stack's namesake scripts (paths as in namesake.scripts).")
    targets: list[Target] = Field(description="The targets it cannot run on.")
    why: OneLine = Field(description="Why not: the API it calls that this release's libraries removed, the "
                         "package the target lacks, or what cannot be built here; with the edit that would fix it.")
    fails_with: OneLine | None = Field(None, description="The error line the unchanged script stops with in this "
                                       "release's image (checked by the namesake integration test); leave out "
                                       "where the image cannot be built here.")
    issue: IssueId | None = Field(None, description="The known issue (stacks/known-issues.yaml) doctor reports for "
                                  "that failure; its fix for this release names what runs the script.")
    instead: OneLine = Field(description="What to use instead: another release or target that runs it.")


class RawNamesakeRun(Strict):
    """Which version of the namesake project a release is meant to run, and where it cannot."""

    commit: str = Field(description="The full 40-character commit of the namesake repository whose scripts this "
                        "release runs.")
    unable: list[RawNamesakeUnable] = Field([], description="Scripts x targets this release cannot run, each with "
                                            "why and what to use instead; everything not listed must run.")


class RawRelease(Strict):
    summary: OneLine
    date: IsoDate
    era: bool = False
    notes: list[OneLine] = []
    torch: VersionText
    cuda: MajorMinor
    with_torch: list[str] = []
    bootstrap: list[str]
    targets: dict[Target, RawTarget]
    apt: list[str] = []
    compiled: list[RawCompiled] = []
    packages: list[str | RawPackage] = []
    last_packages: list[str | RawPackage] = Field(
        default=[], description="The stack's own top-level pins (e.g. peft): installed after every other pin, in a "
        "layer of their own, so bumping one rebuilds only that layer.")
    patches: list[RawPatch] = []
    env: dict[str, str] = {}
    fixes: list[RawFix] = []
    checks: list[CheckName] = Field([], description="Smoke checks this release carries besides the common ones "
                                                     "and those that prove its fixes")
    options: dict[str, RawOption] = {}
    namesake: RawNamesakeRun | None = Field(None, description="The commit of the stack's namesake project that "
                                           "this release runs (required when the stack names one).")


class RawStackHead(Strict):
    name: str
    title: OneLine
    description: str
    requires_python: str | None = None
    default_release: str
    notes: list[OneLine] = []
    apt: list[str] = []
    files: dict[str, RawFile] = {}
    fixes: list[RawFix] = []
    checks: list[CheckName] = Field([], description="Smoke checks every release carries besides the common ones "
                                                     "and those that prove its fixes")
    namesake: RawNamesake | None = Field(None, description="The project the stack is named after, whose own "
                                        "training scripts every release runs (or says why it cannot).")
    releases: dict[Any, Any]


class RawStack(RawStackHead):
    """The whole file, for `stackbuild schema`."""

    releases: dict[str, RawRelease]  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------
# Resolved model (what everything downstream consumes)
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class NamesakeUnable:
    scripts: tuple[str, ...]
    targets: tuple[str, ...]
    why: str
    fails_with: str | None
    issue: str | None
    instead: str


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


@dataclass(frozen=True)
class Release:
    name: str
    summary: str
    date: str
    era: bool
    notes: tuple[str, ...]
    torch: str
    cuda: str
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
    checks: tuple[str, ...] = ()  # named by the profile (stack and release); see builder/checks.py
    namesake: Namesake | None = None


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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def available_stacks(directory: Path | None = None) -> list[str]:
    """Names of the shipped stacks, sorted."""
    directory = directory or stacks_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "known-issues")


def stack_path(spec: str) -> Path:
    """The profile file for a stack name or a path to a YAML file."""
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        return Path(spec)
    if not NAME.match(spec) or not (stacks_dir() / f"{spec}.yaml").is_file():
        names = available_stacks()
        close = difflib.get_close_matches(spec, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SelectionError(f"unknown stack '{spec}'; {hint}stacks: {', '.join(names)}")
    return stacks_dir() / f"{spec}.yaml"


def load_stack(spec: str) -> Stack:
    """Load, validate and resolve one stack profile (by name, or a path to a YAML file)."""
    path = stack_path(spec)
    display = display_path(path)
    if not path.is_file():
        raise SelectionError(f"profile file not found: {display}")
    source, problems = load_yaml(path, display)
    if source is None:
        raise ProfileError(problems)
    knowledge = load_knowledge_base()
    stack = _Resolver(source, path.stem, knowledge, problems).resolve()
    if problems:
        raise ProfileError(problems)
    assert stack is not None
    return replace(stack, path=path.resolve())


class _Resolver:
    """Validates one profile and builds its ``Stack``, collecting every problem on the way."""

    def __init__(self, source: YamlSource, stem: str, knowledge: dict[str, KnownIssue], problems: list[Problem]):
        self.src = source
        self.stem = stem
        self.kb = knowledge
        self.problems = problems
        self.requires_python: SpecifierSet | None = None

    def problem(self, path: PathKey, message: str, fix: str = "") -> None:
        self.problems.append(Problem(self.src.file, self.src.line_of(path), dotted(path), message, fix))

    # -- top level ------------------------------------------------------------------------

    def resolve(self) -> Stack | None:
        if not isinstance(self.src.data, dict):
            self.problem((), "a profile must be a YAML mapping", "start from an existing stacks/*.yaml")
            return None
        try:
            head = RawStackHead.model_validate(self.src.data)
        except ValidationError as exc:
            self.problems.extend(problems_from_validation(exc, self.src, (), RawStackHead))
            # Release blocks are still checked so one run reports everything it can.
            raw_releases = self.src.data.get("releases")
            if isinstance(raw_releases, dict):
                for key, value in raw_releases.items():
                    if self._release_key_ok(key):
                        self._validate_release(str(key), value)
            return None

        if not NAME.match(head.name):
            self.problem(("name",), f"'{head.name}' is not a stack name", "use lowercase words joined by '-'")
        elif head.name != self.stem:
            self.problem(("name",), f"name '{head.name}' does not match the file name '{self.stem}.yaml'",
                         f"rename the file or set name: {self.stem}")
        if head.requires_python is not None:
            try:
                self.requires_python = SpecifierSet(head.requires_python)
            except InvalidSpecifier:
                self.problem(("requires_python",), f"'{head.requires_python}' is not a version specifier",
                             "write it like \">=3.9\"")
        self._check_description(head.description)
        if head.namesake is not None:
            self._check_namesake(head.namesake)
        stack_apt = self._apt(head.apt, ("apt",))
        files = self._files(head.files)
        stack_fixes = self._fixes(head.fixes, ("fixes",))

        if not head.releases:
            self.problem(("releases",), "a stack needs at least one release", "add a release")
        releases: dict[str, Release] = {}
        for key, value in head.releases.items():
            if not self._release_key_ok(key):
                continue
            raw = self._validate_release(str(key), value)
            if raw is not None:
                release = self._release(head, str(key), raw, stack_apt, stack_fixes)
                if release is not None:
                    releases[str(key)] = release
        if head.releases and head.default_release not in head.releases:
            self.problem(("default_release",), f"'{head.default_release}' is not a release of this stack",
                         f"use one of: {', '.join(map(str, head.releases))}")
        if self.problems:
            return None
        return Stack(
            name=head.name, title=head.title, description=" ".join(head.description.split()),
            requires_python=head.requires_python, default_release=head.default_release,
            notes=tuple(head.notes), files=files, releases=releases, source=self.src.file,
        )

    def _check_namesake(self, project: RawNamesake) -> None:
        if not REPOSITORY.match(project.repository):
            self.problem(("namesake", "repository"), f"'{project.repository}' is not a GitHub owner/name",
                         "write it like tloen/alpaca-lora")
        if not project.scripts:
            self.problem(("namesake", "scripts"), "no scripts named", "list the training scripts, e.g. [finetune.py]")
        for index, script in enumerate(project.scripts):
            if not SCRIPT_PATH.match(script) or ".." in script.split("/"):
                self.problem(("namesake", "scripts", index), f"'{script}' is not a relative .py path",
                             "write it as in the repository, like fastchat/train/train.py")
            elif script in project.scripts[:index]:
                self.problem(("namesake", "scripts", index), f"'{script}' is listed twice", "remove the duplicate")

    def _check_description(self, text: str) -> None:
        if not text.strip() or re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text):
            self.problem(("description",), "must be non-empty printable text", "write a short paragraph")

    def _release_key_ok(self, key: Any) -> bool:
        if not isinstance(key, str):
            self.problem(("releases", key), f"release name {key!r} is a {type(key).__name__}, not a string",
                         f"quote it: \"{key}\"")
            return False
        if not RELEASE_NAME.match(key):
            self.problem(("releases", key), f"'{key}' is not a valid release name",
                         "use letters, digits, '.', '_' or '-', like 2023.06")
            return False
        return True

    def _validate_release(self, name: str, value: Any) -> RawRelease | None:
        try:
            return RawRelease.model_validate(value)
        except ValidationError as exc:
            self.problems.extend(problems_from_validation(exc, self.src, ("releases", name), RawRelease))
            return None

    # -- pieces ---------------------------------------------------------------------------

    def pin(self, text: str, path: PathKey) -> Pin | None:
        """Parse a requirement that must be an exact pin or a git URL at a full commit."""
        if not isinstance(text, str) or re.search(r"[\s;'\"`$\\|&]", text.replace(" @ ", "@", 1)):
            self.problem(path, f"{text!r} is not a pinned requirement",
                         "write name==version; no spaces, markers or shell characters")
            return None
        try:
            req = Requirement(text)
        except InvalidRequirement:
            self.problem(path, f"{text!r} is not a valid requirement", "write name==version")
            return None
        name = canonicalize_name(req.name)
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        if req.marker is not None:
            self.problem(path, f"{text!r} has an environment marker", "use 'targets' to vary packages by target")
            return None
        if req.url:
            m = GIT_URL.match(req.url)
            if not m:
                self.problem(path, f"URL {req.url!r} is not a git+https URL at a commit",
                             "use name @ git+https://host/org/repo.git@<40-hex commit>")
                return None
            if not FULL_COMMIT.match(m["rev"]):
                self.problem(path, f"git pin '{m['rev']}' is not a full commit",
                             "pin the full 40-character commit hash, not a branch, tag or short hash")
                return None
            return Pin(name, None, req.url, f"{req.name}{extras} @ {req.url}")
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            self.problem(path, f"{text!r} is not pinned to one exact version",
                         f"pin it: {req.name}==<version> (a curated stack fixes every version)")
            return None
        return Pin(name, specs[0].version, None, f"{req.name}{extras}=={specs[0].version}")

    def pins(self, texts: list[str], path: PathKey) -> tuple[Pin, ...]:
        out = []
        for index, text in enumerate(texts):
            pin = self.pin(text, (*path, index))
            if pin is not None:
                out.append(pin)
        return tuple(out)

    def _apt(self, names: list[str], path: PathKey) -> tuple[str, ...]:
        seen: set[str] = set()
        for index, name in enumerate(names):
            if not APT_NAME.match(name):
                self.problem((*path, index), f"{name!r} is not a Debian package name",
                             "use a package name like libaio-dev (optionally =version)")
            elif name in seen:
                self.problem((*path, index), f"'{name}' is listed twice", "remove the duplicate")
            seen.add(name)
        return tuple(names)

    def _env(self, env: dict[str, str], path: PathKey) -> tuple[tuple[str, str], ...]:
        for name, value in env.items():
            if not ENV_NAME.match(name):
                self.problem((*path, name), f"'{name}' is not an environment variable name",
                             "use letters, digits and '_', not starting with a digit")
            elif not ENV_VALUE.match(value):
                self.problem((*path, name), f"value {value!r} has characters that are unsafe in a Dockerfile",
                             "use letters, digits and _ . / : ; , = + @ % - only (no spaces, quotes, $ or newlines)")
        return tuple(sorted(env.items()))

    def _files(self, files: dict[str, RawFile]) -> tuple[ShippedFile, ...]:
        import json

        out = []
        for name, raw in sorted(files.items()):
            if not FILE_NAME.match(name):
                self.problem(("files", name), f"'{name}' is not a plain file name",
                             "use letters, digits, '.', '_' and '-' (no folders)")
                continue
            out.append(ShippedFile(name, raw.description, json.dumps(raw.document, indent=2, sort_keys=True) + "\n"))
        return tuple(out)

    def _fixes(self, fixes: list[RawFix], path: PathKey) -> tuple[Fix, ...]:
        out = []
        for index, fix in enumerate(fixes):
            issue = self.kb.get(fix.issue)
            if issue is None:
                close = difflib.get_close_matches(fix.issue, list(self.kb), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.problem((*path, index, "issue"), f"unknown known-issue id '{fix.issue}'",
                             f"{hint}ids are defined in stacks/known-issues.yaml")
                continue
            out.append(Fix(issue, fix.via, fix.detail))
        return tuple(out)

    # -- one release ----------------------------------------------------------------------

    def _release(self, head: RawStackHead, name: str, raw: RawRelease,
                 stack_apt: tuple[str, ...], stack_fixes: tuple[Fix, ...]) -> Release | None:
        at: PathKey = ("releases", name)
        before = len(self.problems)
        line = compat.torch_line(raw.torch)
        if line is None:
            known = ", ".join(f"{k}.x" for k in compat.TORCH_LINES)
            self.problem((*at, "torch"), f"torch {raw.torch} is not in stackbuild's compatibility table",
                         f"known: {known}; add a row to builder/compat.py with its Python and CUDA support")

        with_torch = self.pins(raw.with_torch, (*at, "with_torch"))
        bootstrap = self.pins(raw.bootstrap, (*at, "bootstrap"))
        if "pip" not in {p.name for p in bootstrap}:
            self.problem((*at, "bootstrap"), "bootstrap must pin pip", "add pip==<version>")
        apt = stack_apt + self._apt(raw.apt, (*at, "apt"))
        duplicate_apt = set(stack_apt) & set(raw.apt)
        for pkg in sorted(duplicate_apt):
            self.problem((*at, "apt", raw.apt.index(pkg)), f"'{pkg}' is already in the stack's apt list",
                         "remove it here")
        env = self._env(raw.env, (*at, "env"))

        compiled = []
        for index, comp in enumerate(raw.compiled):
            cpath = (*at, "compiled", index)
            pin = self.pin(comp.package, (*cpath, "package"))
            requires = self.pins(comp.requires, (*cpath, "requires"))
            for target in comp.env:
                if target not in comp.targets:
                    self.problem((*cpath, "env", target), f"env for target '{target}', which this step does not build",
                                 f"add '{target}' to targets or remove this env")
            cenv = {t: self._env(values, (*cpath, "env", t)) for t, values in comp.env.items()}
            if comp.memory_per_job_gib is not None and not 1 <= comp.memory_per_job_gib <= 64:
                self.problem((*cpath, "memory_per_job_gib"), f"{comp.memory_per_job_gib} GiB per job is out of range",
                             "use 1 to 64")
            if pin is not None:
                compiled.append(CompiledPackage(pin, comp.why, tuple(comp.targets), requires, comp.no_build_isolation,
                                                comp.memory_per_job_gib, cenv))

        packages = self._packages(raw.packages, (*at, "packages"))
        last_packages = self._packages(raw.last_packages, (*at, "last_packages"))

        options = {}
        for oname, opt in raw.options.items():
            opath = (*at, "options", oname)
            if not NAME.match(oname):
                self.problem(opath, f"'{oname}' is not an option name", "use lowercase words joined by '-'")
                continue
            options[oname] = Option(oname, opt.summary, tuple(opt.targets), self.pins(opt.packages, (*opath, "packages")),
                                    self._fixes(opt.fixes, (*opath, "fixes")))

        patches = []
        for index, p in enumerate(raw.patches):
            ppath = (*at, "patches", index)
            if not PATCH_FILE.match(p.file) or ".." in p.file.split("/"):
                self.problem((*ppath, "file"), f"'{p.file}' is not a relative .py path inside the package",
                             "write it like distributed/fsdp/_state_dict_utils.py")
            if not p.find:
                self.problem((*ppath, "find"), "the text to find is empty", "give the exact line to replace")
            elif p.find == p.replace:
                self.problem((*ppath, "replace"), "replacement equals the text found", "change the replacement")
            if p.count < 1:
                self.problem((*ppath, "count"), f"count {p.count} must be at least 1", "say how often the text occurs")
            if p.fixes not in self.kb:
                self.problem((*ppath, "fixes"), f"unknown known-issue id '{p.fixes}'",
                             "ids are defined in stacks/known-issues.yaml")
            patches.append(Patch(p.id, p.summary, canonicalize_name(p.package), p.file, p.find, p.replace, p.count,
                                 p.fixes))

        for index, check in enumerate(raw.checks):
            if check in head.checks or check in raw.checks[:index]:
                self.problem((*at, "checks", index), f"check '{check}' is listed twice (stack and release checks add "
                             "up)", "keep one entry")
        fixes = stack_fixes + self._fixes(raw.fixes, (*at, "fixes"))
        seen_fix: set[str] = set()
        for index, fix in enumerate(fixes):
            if fix.issue.id in seen_fix:
                where = (*at, "fixes", index - len(stack_fixes)) if index >= len(stack_fixes) else ("fixes", index)
                self.problem(where, f"issue '{fix.issue.id}' is listed twice (stack and release fixes add up)",
                             "keep one entry")
            seen_fix.add(fix.issue.id)

        targets = {}
        for tname, traw in raw.targets.items():
            spec = self._target(head, name, raw, tname, traw)
            if spec is not None:
                targets[tname] = spec
        if not raw.targets:
            self.problem((*at, "targets"), "a release needs at least one target", "add cuda and/or cpu")

        if len(self.problems) > before:
            return None
        release = Release(
            name=name, summary=raw.summary, date=raw.date, era=raw.era, notes=tuple(raw.notes), torch=raw.torch,
            cuda=raw.cuda, with_torch=with_torch, bootstrap=bootstrap, targets=targets, apt=apt,
            compiled=tuple(compiled), packages=packages, last_packages=last_packages, patches=tuple(patches), env=env,
            fixes=fixes,
            options=options, checks=tuple(dict.fromkeys((*head.checks, *raw.checks))),
            namesake=self._namesake(head, raw, at),
        )
        _RuleCheck(self, at, release).run()
        return release if len(self.problems) == before else None

    def _namesake(self, head: RawStackHead, raw: RawRelease, at: PathKey) -> Namesake | None:
        project, run = head.namesake, raw.namesake
        if project is None:
            if run is not None:
                self.problem((*at, "namesake"), "the stack names no namesake project",
                             "add namesake: {repository: owner/name, scripts: [...]} at the top, or remove this")
            return None
        if run is None:
            self.problem((*at, "namesake"), f"release does not say which commit of {project.repository} it runs",
                         "add namesake: {commit: <40-hex commit>} (and 'unable' entries where it cannot run)")
            return None
        if not FULL_COMMIT.match(run.commit):
            self.problem((*at, "namesake", "commit"), f"'{run.commit}' is not a full commit",
                         "pin the full 40-character commit hash, not a branch, tag or short hash")
        unable = []
        for index, entry in enumerate(run.unable):
            upath = (*at, "namesake", "unable", index)
            for sindex, script in enumerate(entry.scripts):
                if script not in project.scripts:
                    self.problem((*upath, "scripts", sindex), f"'{script}' is not one of the namesake scripts",
                                 f"use one of: {', '.join(project.scripts)}")
            if not entry.scripts or not entry.targets:
                self.problem(upath, "an unable entry needs scripts and targets", "name at least one of each")
            for target in entry.targets:
                if target not in raw.targets:
                    self.problem((*upath, "targets"), f"target '{target}' is not a target of this release",
                                 f"use one of: {', '.join(raw.targets)}")
            for script in entry.scripts:
                for target in entry.targets:
                    if any(script in e.scripts and target in e.targets for e in run.unable[:index]):
                        self.problem(upath, f"{script} on {target} is already marked unable", "keep one entry")
            if entry.issue is not None and entry.issue not in self.kb:
                self.problem((*upath, "issue"), f"unknown known-issue id '{entry.issue}'",
                             "ids are defined in stacks/known-issues.yaml")
            if entry.issue is not None and entry.fails_with is None:
                self.problem((*upath, "issue"), "an issue without the fails_with line it explains",
                             "add fails_with: <the error line>, or remove issue")
            unable.append(NamesakeUnable(tuple(entry.scripts), tuple(entry.targets), entry.why, entry.fails_with,
                                         entry.issue, entry.instead))
        return Namesake(project.repository, tuple(project.scripts), run.commit, tuple(unable))

    def _packages(self, entries: list[str | RawPackage], path: PathKey) -> tuple[PackagePin, ...]:
        out = []
        for index, entry in enumerate(entries):
            if isinstance(entry, str):
                pin = self.pin(entry, (*path, index))
                if pin is not None:
                    out.append(PackagePin(pin, "", TARGETS))
            else:
                pin = self.pin(entry.requirement, (*path, index, "requirement"))
                if pin is not None:
                    out.append(PackagePin(pin, entry.why, tuple(entry.targets)))
        return tuple(out)

    def _target(self, head: RawStackHead, rname: str, raw: RawRelease, tname: str, traw: RawTarget) -> TargetSpec | None:
        at: PathKey = ("releases", rname, "targets", tname)
        base = compat.parse_base_image(traw.base)
        if base is None:
            self.problem((*at, "base"), f"unknown base image '{traw.base}'", f"use {compat.KNOWN_BASES_HINT}")
            return None
        ok = True
        if tname == "cpu" and base.distro != "debian":
            self.problem((*at, "base"), f"the cpu target builds on a Debian slim base, not '{traw.base}'",
                         "use debian:bullseye-slim (3.9), bookworm-slim (3.11) or trixie-slim (3.13)")
            ok = False
        if tname == "cuda":
            if base.cuda is None:
                self.problem((*at, "base"), f"the cuda target needs an nvidia/cuda base, not '{traw.base}'",
                             f"use nvidia/cuda:{raw.cuda}.<patch>-cudnn-devel-ubuntu22.04 or similar")
                ok = False
            else:
                if not base.devel:
                    self.problem((*at, "base"), f"'{traw.base}' has no nvcc; compiled ops need a -devel image",
                                 "use the -devel flavour of this image")
                    ok = False
                if base.cuda != raw.cuda:
                    self.problem((*at, "base"), f"base image CUDA {base.cuda} does not match the release's CUDA {raw.cuda}",
                                 "nvcc must match the CUDA torch was built with; use a base with the same CUDA")
                    ok = False
        if traw.python != base.python:
            self.problem((*at, "python"), f"python {traw.python} is not what {traw.base} ships ({base.python})",
                         f"set python: \"{base.python}\" or choose another base")
            ok = False
        py = compat.version_tuple(traw.python)
        if self.requires_python is not None and traw.python + ".0" not in self.requires_python:
            self.problem((*at, "python"), f"python {traw.python} does not satisfy the stack's requires_python "
                         f"'{head.requires_python}'", "choose a base image with a newer Python")
            ok = False
        line = compat.torch_line(raw.torch)
        if line is not None:
            if not line.python_min <= py <= line.python_max:
                self.problem((*at, "python"), f"torch {raw.torch} has no wheels for Python {traw.python} "
                             f"(it supports {compat.fmt_version(line.python_min)}-{compat.fmt_version(line.python_max)})",
                             "choose a base image whose Python torch supports")
                ok = False
            elif py > line.compile_python_max:
                self.problem((*at, "python"), f"torch {raw.torch}'s torch.compile refuses Python {traw.python} "
                             f"(supports up to {compat.fmt_version(line.compile_python_max)})",
                             "use an older Python (e.g. debian:bullseye-slim, ubuntu22.04) or a newer torch")
                ok = False
        arch_list = tuple(traw.arch_list)
        if tname == "cpu" and arch_list:
            self.problem((*at, "arch_list"), "the cpu target compiles no CUDA code", "remove arch_list")
            ok = False
        compiles = any("cuda" in c.targets for c in raw.compiled)
        if tname == "cuda":
            if compiles and not arch_list:
                self.problem((*at, "arch_list"), "the cuda target needs the GPU archs to compile for "
                             "(no GPU is visible during docker build)", "add arch_list, e.g. [\"8.0\", \"9.0\"]")
                ok = False
            elif arch_list and not compiles:
                self.problem((*at, "arch_list"), "nothing is compiled for the cuda target, so arch_list is unused",
                             "remove arch_list")
                ok = False
            cuda = compat.version_tuple(raw.cuda)
            for index, arch in enumerate(arch_list):
                if not ARCH.match(arch) or arch not in compat.ARCH_MIN_CUDA:
                    self.problem((*at, "arch_list", index), f"'{arch}' is not a known compute capability",
                                 f"use one of {', '.join(compat.ARCH_MIN_CUDA)} (quoted)")
                    ok = False
                elif cuda < compat.ARCH_MIN_CUDA[arch]:
                    need = compat.fmt_version(compat.ARCH_MIN_CUDA[arch])
                    self.problem((*at, "arch_list", index), f"CUDA {raw.cuda} cannot compile for sm_{arch.replace('.', '')}",
                                 f"sm_{arch.replace('.', '')} needs CUDA >= {need}; drop it or use a newer CUDA")
                    ok = False
        env = self._env(traw.env, (*at, "env"))
        torch_index = None
        torch_pin = Pin("torch", raw.torch, None, f"torch=={raw.torch}")
        if tname == "cuda" and line is not None:
            if raw.cuda not in line.cuda_builds:
                self.problem(("releases", rname, "cuda"), f"torch {raw.torch} has no CUDA {raw.cuda} build",
                             f"torch {raw.torch} is built for CUDA {', '.join(line.cuda_builds)}")
                ok = False
            elif raw.cuda != line.pypi_cuda:
                local = raw.cuda.replace(".", "")
                torch_index = compat.torch_index_url(raw.cuda)
                torch_pin = Pin("torch", f"{raw.torch}+cu{local}", None, f"torch=={raw.torch}+cu{local}")
        if not ok:
            return None
        return TargetSpec(tname, base, traw.python, arch_list, env, torch_pin, torch_index)


class _RuleCheck:
    """Domain rules: what DeepSpeed, flash-attn, xformers and old torch need from a release."""

    def __init__(self, resolver: _Resolver, at: PathKey, release: Release):
        self.r = resolver
        self.at = at
        self.rel = release

    def run(self) -> None:
        self._duplicates()
        self._numpy()
        self._compiled()
        self._xformers()
        self._patches()
        self._fix_mechanisms()

    def _all_pins(self) -> list[tuple[PathKey, Pin]]:
        at = self.at
        out: list[tuple[PathKey, Pin]] = [((*at, "with_torch", i), p) for i, p in enumerate(self.rel.with_torch)]
        for i, comp in enumerate(self.rel.compiled):
            out.append(((*at, "compiled", i, "package"), comp.pin))
            out.extend(((*at, "compiled", i, "requires", j), p) for j, p in enumerate(comp.requires))
        out.extend(((*at, "packages", i), p.pin) for i, p in enumerate(self.rel.packages))
        out.extend(((*at, "last_packages", i), p.pin) for i, p in enumerate(self.rel.last_packages))
        return out

    def pinned(self, name: str) -> Pin | None:
        for _, pin in self._all_pins():
            if pin.name == name:
                return pin
        return None

    def _duplicates(self) -> None:
        seen: dict[str, PathKey] = {}
        for path, pin in self._all_pins():
            if pin.name == "torch":
                self.r.problem(path, "torch is pinned by the release's 'torch' and 'cuda' fields",
                               "remove it from this list")
            elif pin.name in seen:
                self.r.problem(path, f"'{pin.name}' is pinned twice (also at {dotted(seen[pin.name])})",
                               "keep one pin")
            else:
                seen[pin.name] = path

    def _numpy(self) -> None:
        if compat.version_tuple(self.rel.torch)[:2] >= compat.TORCH_NEEDS_NUMPY1_BELOW:
            return
        numpy = next((p for p in self.rel.with_torch if p.name == "numpy"), None)
        if numpy is None or numpy.version is None or Version(numpy.version) >= Version("2"):
            self.r.problem((*self.at, "with_torch"), f"torch {self.rel.torch} breaks with NumPy 2",
                           "pin numpy 1.x in with_torch, e.g. numpy==1.24.4")

    def _compiled(self) -> None:
        for index, comp in enumerate(self.rel.compiled):
            path = (*self.at, "compiled", index)
            if comp.pin.name == "flash-attn":
                self._flash_attn(comp, path)
            if comp.pin.name == "deepspeed":
                self._deepspeed(comp, path)

    def _flash_attn(self, comp: CompiledPackage, path: PathKey) -> None:
        if not comp.no_build_isolation:
            self.r.problem((*path, "no_build_isolation"),
                           "flash-attn's setup.py imports torch, which build isolation hides (No module named 'torch')",
                           "set no_build_isolation: true")
        if comp.memory_per_job_gib is None:
            self.r.problem(path, "flash-attn's build needs MAX_JOBS bounded by memory or it is OOM-killed",
                           "set memory_per_job_gib (about 9 at NVCC_THREADS=4)")
        cuda = self.rel.targets.get("cuda")
        if cuda is None or "cuda" not in comp.targets:
            return
        for i, arch in enumerate(cuda.arch_list):
            if compat.version_tuple(arch) < (8, 0):
                self.r.problem(("releases", self.rel.name, "targets", "cuda", "arch_list", i),
                               f"flash-attn does not support sm_{arch.replace('.', '')} (it needs sm80+, Ampere or newer)",
                               "limit arch_list to 8.0 and above; pre-Ampere GPUs use the xformers option")
        version = Version(comp.pin.version) if comp.pin.version else None
        env = dict(comp.env.get("cuda", ()))
        if version is not None and version >= Version("2.7"):
            value = env.get("FLASH_ATTN_CUDA_ARCHS")
            wanted = ";".join(a.replace(".", "") for a in cuda.arch_list)
            if value is None:
                self.r.problem((*path, "env", "cuda"), "flash-attn >= 2.7 ignores TORCH_CUDA_ARCH_LIST",
                               f"set FLASH_ATTN_CUDA_ARCHS: \"{wanted}\"")
            elif set(value.split(";")) - set(wanted.split(";")):
                self.r.problem((*path, "env", "cuda", "FLASH_ATTN_CUDA_ARCHS"),
                               f"'{value}' names archs outside the target's arch_list ({wanted})",
                               f"use \"{wanted}\" or a subset")

    def _deepspeed(self, comp: CompiledPackage, path: PathKey) -> None:
        version = Version(comp.pin.version) if comp.pin.version else None
        flags_any = {k: v for env in comp.env.values() for k, v in env}
        if any(k.startswith("DS_BUILD_") and v == "1" for k, v in flags_any.items()) and not comp.no_build_isolation:
            self.r.problem((*path, "no_build_isolation"),
                           "pre-compiling DeepSpeed ops needs torch importable at build time",
                           "set no_build_isolation: true")
        names = {p.name for p in comp.requires} | {p.pin.name for p in (*self.rel.packages, *self.rel.last_packages)}
        if "ninja" not in names:
            self.r.problem((*path, "requires"), "DeepSpeed JIT-loads ops at run time and needs ninja",
                           "add ninja==<version> to requires")
        for target, env in comp.env.items():
            flags = dict(env)
            epath = (*path, "env", target)
            if (flags.get("DS_BUILD_OPS") == "1" or flags.get("DS_BUILD_AIO") == "1") and "libaio-dev" not in self.rel.apt:
                self.r.problem(epath, "async_io is pre-compiled but libaio-dev is not installed "
                               "(Unable to pre-compile async_io)", "add libaio-dev to apt")
            if (version is not None and version < Version("0.15.1") and flags.get("DS_BUILD_OPS") == "1"
                    and compat.version_tuple(self.rel.torch) >= (2,) and flags.get("DS_BUILD_SPARSE_ATTN") != "0"):
                self.r.problem(epath, f"deepspeed {version} aborts on sparse_attn, which needs torch < 2",
                               "set DS_BUILD_SPARSE_ATTN: \"0\"")
            if (target == "cuda" and version is not None and version >= Version("0.14.1")
                    and flags.get("DS_ACCELERATOR") != "cuda"):
                self.r.problem(epath, f"deepspeed {version} picks its CPU accelerator when no GPU is visible "
                               "during docker build, and the ops are useless on a GPU", "set DS_ACCELERATOR: cuda")
        pydantic = self.pinned("pydantic")
        if (version is not None and Version("0.9.2") <= version <= Version("0.11.0") and pydantic is not None
                and pydantic.version and Version(pydantic.version) >= Version("2")):
            self.r.problem((*path, "package"), f"deepspeed {version} requires pydantic<2 but pydantic=={pydantic.version} "
                           "is pinned", "pin pydantic 1.10.x")

    def _xformers(self) -> None:
        sources: list[tuple[PathKey, Pin]] = [(p, pin) for p, pin in self._all_pins()]
        for oname, opt in self.rel.options.items():
            sources.extend(((*self.at, "options", oname, "packages", i), p) for i, p in enumerate(opt.packages))
        for path, pin in sources:
            if pin.name != "xformers" or pin.version is None:
                continue
            wanted = compat.XFORMERS_TORCH.get(pin.version)
            if wanted is None:
                self.r.problem(path, f"xformers {pin.version} is not in stackbuild's table of xformers -> torch pins",
                               f"known: {', '.join(compat.XFORMERS_TORCH)}")
            elif wanted != self.rel.torch:
                self.r.problem(path, f"xformers {pin.version} requires torch=={wanted}, the release pins {self.rel.torch}",
                               "choose the xformers release built for this torch")

    def _patches(self) -> None:
        names = {pin.name for _, pin in self._all_pins()} | {"torch"}
        for index, patch in enumerate(self.rel.patches):
            if patch.package not in names:
                self.r.problem((*self.at, "patches", index, "package"),
                               f"patch targets '{patch.package}', which this release does not install",
                               f"use one of: {', '.join(sorted(names))}")
        ids = [p.id for p in self.rel.patches]
        for index, pid in enumerate(ids):
            if ids.index(pid) != index:
                self.r.problem((*self.at, "patches", index, "id"), f"patch id '{pid}' is used twice", "rename one")

    def _fix_mechanisms(self) -> None:
        patched = {p.fixes for p in self.rel.patches}
        for fix in self.rel.fixes:
            if fix.via == "patch" and fix.issue.id not in patched:
                self.r.problem((*self.at, "fixes"), f"fix '{fix.issue.id}' is 'via: patch' but no patch fixes it",
                               "add the patch or change 'via'")
