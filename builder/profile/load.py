"""Stack profiles: load one, validate it and resolve it into the frozen ``Stack`` (builder/profile/resolved.py).

``load_stack`` reads ``stacks/<name>.yaml``, validates its shape against the raw model
(builder/profile/raw.py: unknown keys are errors), then checks what the shape cannot say:
requirement syntax and exact pins, torch x CUDA x Python combinations that exist, base images and
the interpreter they ship (the target's rules, builder/profile/targets.py), GPU arch lists against nvcc,
environment variable names and values, known-issue ids, and the domain rules of
builder/profile/rules.py. Every problem of a file is reported at once as
``stacks/x.yaml:LINE: field.path: problem (fix)``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import ValidationError

from . import versions as compat
from . import targets
from ..errors import Problem, ProfileError, SelectionError
from .knowledge import KnownIssue, load_knowledge_base
from .names import IDENTIFIER, KEBAB, RELEASE
from ..safety.printable import printable
from .rules import RuleCheck
from .accelerators import ACCELERATORS
from .raw import (TARGETS, RawCompiled, RawFile, RawFix, RawNamesake, RawPackage, RawRelease, RawStackHead,
                           RawTarget, RawTraining, RawTrainingEvidence)
from ..safety.paths import display_path, stacks_dir
from .spec import is_profile_path
from .resolved import (TRAINING_PLACEHOLDERS, AuditAllow, CompiledPackage, Declined, Fix, Held, Namesake, NamesakeUnable,
                       Option, PackagePin, Patch, Pin, Release, ShippedFile, Stack, TargetSpec, Training,
                       TrainingEvidence, TrainingVariant)
from .problems import dotted, problems_from_validation
from .source import PathKey, YamlSource, load_yaml

NAME = KEBAB
RELEASE_NAME = RELEASE
ENV_NAME = IDENTIFIER
# Values land in `ENV K=V` and shell command prefixes: no quoting characters, `$` or whitespace.
ENV_VALUE = re.compile(r"^[A-Za-z0-9_./:;,=+@%-]*\Z")
APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?\Z")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
PATCH_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py\Z")
ARCH = re.compile(r"^\d+\.\d+\Z")
GIT_URL = re.compile(r"^git\+https://[A-Za-z0-9.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?(?:\.git)?@(?P<rev>[^@/\s]+)\Z")
FULL_COMMIT = re.compile(r"^[0-9a-f]{40}\Z")
REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9_.-]{1,100}\Z")
SCRIPT_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py\Z")
# A training command's words: plain arguments (no shell syntax, no quoting) with {placeholders}.
COMMAND_WORD = re.compile(r"^[A-Za-z0-9_./:=,+@%-]+\Z")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
EVIDENCE_FILE = re.compile(r"^[A-Za-z0-9_.*?\[\]-][A-Za-z0-9_.*?\[\]/-]*\Z")
REQUIRED_PLACEHOLDERS = ("model", "data", "output", "steps")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def available_stacks(directory: Path | None = None) -> list[str]:
    """Names of the shipped stacks, sorted."""
    directory = directory or stacks_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "known-issues")


def stack_path(spec: str) -> Path:
    """The profile file for a stack name or a path to a YAML file."""
    if is_profile_path(spec):
        return Path(spec)
    if not NAME.match(spec) or len(spec) > 100 or not (stacks_dir() / f"{spec}.yaml").is_file():
        names = available_stacks()
        close = difflib.get_close_matches(spec, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SelectionError(f"unknown stack '{printable(spec)}'; {hint}stacks: {', '.join(names)}")
    return stacks_dir() / f"{spec}.yaml"


def load_stack(spec: str) -> Stack:
    """Load, validate and resolve one stack profile (by name, or a path to a YAML file)."""
    path = stack_path(spec)
    display = display_path(path)
    if not path.exists() and not path.is_symlink():
        raise SelectionError(f"profile file not found: {printable(display)}")
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
        if not text.strip() or re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", text):
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

    def _parallel_extensions(self, comp: RawCompiled, path: PathKey) -> None:
        """What side-by-side extension builds need: a job budget, and pip leaving PYTHONPATH alone."""
        if comp.memory_per_job_gib is None:
            self.problem((*path, "parallel_extensions"), "extensions built side by side share a job budget, "
                         "which memory_per_job_gib sizes", "set memory_per_job_gib (e.g. 4)")
        if not comp.no_build_isolation:
            self.problem((*path, "parallel_extensions"), "build isolation replaces the PYTHONPATH that brings "
                         "in the build_ext hook", "set no_build_isolation: true")
        for target, env in comp.env.items():
            if "PYTHONPATH" in env:
                self.problem((*path, "env", target, "PYTHONPATH"), "parallel_extensions sets PYTHONPATH for "
                             "the build (the build_ext hook)", "remove PYTHONPATH here")

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

    def _advisories(self, ids: list[str], path: PathKey) -> tuple[KnownIssue, ...]:
        out = []
        for index, issue_id in enumerate(ids):
            issue = self.kb.get(issue_id)
            if issue is None or issue.kind != "advisory":
                what = "an unknown known-issue id" if issue is None else "not an advisory (a failure goes under fixes)"
                self.problem((*path, index), f"'{issue_id}' is {what}",
                             "name an entry of stacks/known-issues.yaml with kind: advisory")
                continue
            out.append(issue)
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
                         f"known: {known}; add a row to builder/profile/versions.py with its Python and CUDA support")

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
            if comp.parallel_extensions:
                self._parallel_extensions(comp, cpath)
            if pin is not None:
                compiled.append(CompiledPackage(pin, comp.why, tuple(comp.targets), requires, comp.no_build_isolation,
                                                comp.memory_per_job_gib, comp.parallel_extensions, cenv))

        packages = self._packages(raw.packages, (*at, "packages"))
        last_packages = self._packages(raw.last_packages, (*at, "last_packages"))

        options = {}
        for oname, opt in raw.options.items():
            opath = (*at, "options", oname)
            if not NAME.match(oname):
                self.problem(opath, f"'{oname}' is not an option name", "use lowercase words joined by '-'")
                continue
            if not opt.packages and not opt.last_packages:
                self.problem(opath, f"option '{oname}' installs nothing", "give it packages or last_packages")
            options[oname] = Option(oname, opt.summary, tuple(opt.targets), self.pins(opt.packages, (*opath, "packages")),
                                    self._fixes(opt.fixes, (*opath, "fixes")),
                                    self.pins(opt.last_packages, (*opath, "last_packages")),
                                    self._advisories(opt.advisories, (*opath, "advisories")))
        declined = {}
        for dname, dec in raw.declined.items():
            dpath = (*at, "declined", dname)
            if not NAME.match(dname):
                self.problem(dpath, f"'{dname}' is not an option name", "use lowercase words joined by '-'")
            elif dname in options:
                self.problem(dpath, f"option '{dname}' is both shipped and declined", "keep one of the two")
            else:
                declined[dname] = Declined(dname, dec.summary, dec.why, dec.instead, tuple(dec.references))

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
            self.problem((*at, "targets"), "a release needs at least one target",
                         f"add {' and/or '.join(targets.NAMES)}")

        training = self._training(raw, at)
        if len(self.problems) > before:
            return None
        release = Release(
            name=name, summary=raw.summary, date=raw.date, era=raw.era, notes=tuple(raw.notes), torch=raw.torch,
            with_torch=with_torch, bootstrap=bootstrap, targets=targets, apt=apt,
            compiled=tuple(compiled), packages=packages, last_packages=last_packages, patches=tuple(patches), env=env,
            fixes=fixes,
            options=options, checks=tuple(dict.fromkeys((*head.checks, *raw.checks))),
            namesake=self._namesake(head, raw, at, training), training=training, multinode=raw.multinode,
            declined=declined,
            audit_allow=tuple(AuditAllow(a.id, a.reason, a.expires) for a in raw.audit_allow),
            accelerator_versions={a.version_field: version for a in ACCELERATORS.values()
                                  if (version := raw.accelerator_version(a.version_field)) is not None},
        )
        release = replace(release, held=self._held(raw, release, at))
        RuleCheck(self.problem, at, release).run()
        return release if len(self.problems) == before else None

    def _command_words(self, text: str, path: PathKey) -> tuple[str, ...]:
        """A command line's words, each plain or with known {placeholders}; problems for anything else."""
        words = tuple(text.split(" "))
        for word in words:
            names = PLACEHOLDER.findall(word)
            rest = PLACEHOLDER.sub("", word)
            unknown = [name for name in names if name not in TRAINING_PLACEHOLDERS]
            if unknown:
                self.problem(path, f"unknown placeholder '{{{unknown[0]}}}'",
                             f"use {', '.join('{' + n + '}' for n in TRAINING_PLACEHOLDERS)}")
            elif word == "" or (rest and not COMMAND_WORD.match(rest)) or (not rest and not names):
                self.problem(path, f"{word!r} is not a plain argument (words are separated by one space; no quotes, "
                             "shell syntax or braces other than placeholders)", "write plain words such as "
                             "--lora_target_modules q_proj v_proj")
        return words

    def _evidence(self, raw: RawTrainingEvidence, path: PathKey) -> TrainingEvidence:
        for index, pattern in enumerate(raw.files):
            if not EVIDENCE_FILE.match(pattern) or ".." in pattern.split("/"):
                self.problem((*path, "files", index), f"'{pattern}' is not a relative file pattern inside the output "
                             "folder", "write it like checkpoint-*/pytorch_model_fsdp.bin")
        return TrainingEvidence(tuple(raw.log), tuple(raw.files))

    def _training(self, raw: RawRelease, at: PathKey) -> tuple[Training, ...]:
        """The release's training entries, checked: names, command words, targets and evidence patterns."""
        entries: list[Training] = []
        for index, entry in enumerate(raw.training):
            tpath = (*at, "training", index)
            if not NAME.match(entry.name):
                self.problem((*tpath, "name"), f"'{entry.name}' is not an entry name", "use lowercase words joined by '-'")
            elif any(e.name == entry.name for e in raw.training[:index]):
                self.problem((*tpath, "name"), f"training entry '{entry.name}' is listed twice", "keep one entry")
            command = self._command_words(entry.command, (*tpath, "command"))
            if command and command[0].startswith(("-", "{")):
                self.problem((*tpath, "command"), f"'{command[0]}' is not a program", "start with the program, e.g. trl")
            used = set(PLACEHOLDER.findall(entry.command))
            for name in REQUIRED_PLACEHOLDERS:
                if name not in used:
                    self.problem((*tpath, "command"), f"the command does not use {{{name}}}",
                                 f"pass {{{name}}} where the program takes its {name}")
            if not 1 <= entry.processes <= 8:
                self.problem((*tpath, "processes"), f"{entry.processes} processes is out of range", "use 1 to 8")
            elif entry.processes > 1 and "processes" not in used:
                self.problem((*tpath, "command"), f"the entry starts {entry.processes} processes but its command does "
                             "not say so", "pass {processes} to the launcher, e.g. --num_processes {processes}")
            if not entry.targets:
                self.problem((*tpath, "targets"), "the entry runs on no target", f"add {' and/or '.join(raw.targets)}")
            variants = {}
            for tname, variant in entry.targets.items():
                vpath = (*tpath, "targets", tname)
                if tname not in raw.targets:
                    self.problem(vpath, f"target '{tname}' is not a target of this release",
                                 f"use one of: {', '.join(raw.targets)}")
                flags = self._command_words(variant.flags, (*vpath, "flags")) if variant.flags else ()
                variants[tname] = TrainingVariant(tname, flags, self._evidence(variant.evidence, (*vpath, "evidence")))
            entries.append(Training(entry.name, entry.summary, command, entry.processes, entry.saves,
                                    self._evidence(entry.evidence, (*tpath, "evidence")), variants))
        return tuple(entries)

    def _held(self, raw: RawRelease, release: Release, at: PathKey) -> tuple[Held, ...]:
        """The release's held pins: each names a package the release pins, at the version it pins, below its newest."""
        pinned = release.pinned_versions()
        out: list[Held] = []
        for index, entry in enumerate(raw.held):
            hpath = (*at, "held", index)
            name = canonicalize_name(entry.package)
            if name not in pinned:
                self.problem((*hpath, "package"), f"'{entry.package}' is not pinned by this release",
                             f"name one of its pins: {', '.join(sorted(pinned))}")
                continue
            if entry.at != pinned[name]:
                self.problem((*hpath, "at"), f"{name} is pinned at {pinned[name]}, not {entry.at}",
                             f"set at: \"{pinned[name]}\"")
            if Version(entry.newest) <= Version(entry.at):
                self.problem((*hpath, "newest"), f"{entry.newest} is not newer than {entry.at}",
                             "a held pin is below the newest version; remove the entry if it is not")
            if name in {h.package for h in out}:
                self.problem((*hpath, "package"), f"'{name}' is held twice", "keep one entry")
            if entry.issue is not None and entry.issue not in self.kb:
                self.problem((*hpath, "issue"), f"unknown known-issue id '{entry.issue}'",
                             "ids are defined in stacks/known-issues.yaml")
            out.append(Held(name, entry.at, entry.newest, entry.why, tuple(entry.evidence), entry.issue,
                            tuple(entry.references)))
        return tuple(out)

    def _namesake(self, head: RawStackHead, raw: RawRelease, at: PathKey,
                  training: tuple[Training, ...] = ()) -> Namesake | None:
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
            if entry.training is not None:
                runs = {t.name: t for t in training}
                if entry.training not in runs:
                    self.problem((*upath, "training"), f"'{entry.training}' is not a training entry of this release",
                                 f"use one of: {', '.join(runs) or '(none: add a training list)'}")
                else:
                    missing = [t for t in entry.targets if t not in runs[entry.training].targets]
                    if missing:
                        self.problem((*upath, "training"), f"training entry '{entry.training}' does not run on "
                                     f"{', '.join(missing)}", "add the target to the entry, or name another")
            unable.append(NamesakeUnable(tuple(entry.scripts), tuple(entry.targets), entry.why, entry.fails_with,
                                         entry.issue, entry.instead, entry.training))
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
            self.problem((*at, "base"), f"unknown base image '{traw.base}'", f"use {targets.known_bases_hint()}")
            return None
        entry = targets.target(tname)
        accelerator = entry.accelerator_version(raw)  # the field its accelerator's entry names
        if entry.accelerator_entry is not None and not accelerator:
            field_name = entry.accelerator_entry.version_field
            self.problem(("releases", rname), f"the {tname} target needs the release's '{field_name}' version",
                         f"add {field_name}: \"X.Y\" to the release")
            return None
        ok = True
        compiles = any(tname in c.targets for c in raw.compiled)
        for message, fix in entry.base_problems(base, traw.base, accelerator, compiles):
            self.problem((*at, "base"), message, fix)
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
        if not entry.compiles_for_archs:
            if arch_list:
                self.problem((*at, "arch_list"), f"the {tname} target compiles no CUDA code", "remove arch_list")
                ok = False
        else:
            if compiles and not arch_list:
                self.problem((*at, "arch_list"), f"the {tname} target needs the GPU archs to compile for "
                             "(no GPU is visible during docker build)", "add arch_list, e.g. [\"8.0\", \"9.0\"]")
                ok = False
            elif arch_list and not compiles:
                self.problem((*at, "arch_list"), f"nothing is compiled for the {tname} target, so arch_list is unused",
                             "remove arch_list")
                ok = False
            version = compat.version_tuple(accelerator)
            arch_min, label = entry.accelerator_entry.arch_min, entry.accelerator_entry.label
            for index, arch in enumerate(arch_list):
                if not ARCH.match(arch) or arch not in arch_min:
                    self.problem((*at, "arch_list", index), f"'{arch}' is not a known compute capability",
                                 f"use one of {', '.join(arch_min)} (quoted)")
                    ok = False
                elif version < arch_min[arch]:
                    need = compat.fmt_version(arch_min[arch])
                    self.problem((*at, "arch_list", index), f"{label} {accelerator} cannot compile for sm_{arch.replace('.', '')}",
                                 f"sm_{arch.replace('.', '')} needs {label} >= {need}; drop it or use a newer {label}")
                    ok = False
        env = self._env(traw.env, (*at, "env"))
        torch_index = None
        torch_pin = Pin("torch", raw.torch, None, f"torch=={raw.torch}")
        if line is not None:
            source = entry.torch_source(raw.torch, accelerator)
            if isinstance(source, tuple):
                self.problem(("releases", rname, entry.accelerator_entry.version_field if entry.accelerator_entry
                              else "torch"), *source)
                ok = False
            elif source.index is not None:
                torch_index = source.index
                torch_pin = Pin("torch", source.version, None, f"torch=={source.version}")
        if not ok:
            return None
        return TargetSpec(tname, base, traw.python, arch_list, env, torch_pin, torch_index)
