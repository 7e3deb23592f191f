"""The knowledge base of known failures (stacks/known-issues.yaml).

Profiles name the issues they prevent by id; an unknown id is a load error. ``doctor`` matches
each entry's ``patterns`` against logs, so every pattern is compiled here, at load, and refused
when it could make matching slow (see ``compile_log_pattern``): a bad pattern is a knowledge-base
error with its file and line, never a hang on a user's 10 MB log.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError

from .names import KEBAB, KEBAB_TEXT, RELEASE_TEXT
from ..smoke.checks import CHECKS
from ..errors import ProfileError, Problem
from ..safety.paths import display_path, stacks_dir
from ..safety.files import MAX_KNOWLEDGE_BYTES
from .problems import ONE_LINE, Strict, problems_from_validation
from .source import load_yaml

try:  # Python >= 3.11
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

ISSUE_ID = KEBAB
REFERENCE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#\d+\Z")
STACK_NAME = KEBAB
CHECK_NAME = re.compile(r"^[a-z0-9-]+\Z")
ERA_KEY = re.compile(rf"^(?P<stack>{KEBAB_TEXT})@(?P<release>{RELEASE_TEXT})\Z")

# A pattern must contain this much fixed text outside optional parts and alternatives: it is what
# doctor searches for first (str.find, fast), so only lines that contain it reach the regex.
MIN_LITERAL = 4
# At most this many `.*` / `.+` in one pattern: each one more multiplies the work on a line that
# almost matches.
MAX_WILDCARDS = 2
DEFAULT_CONTEXT_WINDOW = 200


def _issue_id(value: str) -> str:
    if not ISSUE_ID.match(value):
        raise ValueError(f"'{value}' is not a valid issue id || use lowercase words joined by '-'")
    return value


def _one_line(value: str) -> str:
    if not value.strip() or not ONE_LINE.match(value):
        raise ValueError("must be one non-empty line of printable text || remove line breaks and control characters")
    return value


def _reference(value: str) -> str:
    if not REFERENCE.match(value):
        raise ValueError(f"'{value}' is not a reference || write it as owner/repo#number")
    return value


def _stack_name(value: str) -> str:
    if value != "any" and not STACK_NAME.match(value):
        raise ValueError(f"'{value}' is not a stack name || use a stack name or 'any'")
    return value


def _check_name(value: str) -> str:
    if not CHECK_NAME.match(value):
        raise ValueError(f"'{value}' is not a smoke check name || use lowercase letters, digits and '-'")
    if value not in CHECKS:
        close = difflib.get_close_matches(value, list(CHECKS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"there is no smoke check '{value}' || {hint}checks are listed in builder/smoke/checks.py")
    return value


@dataclass(frozen=True)
class LogPattern:
    """One compiled log pattern and the fixed text every line it matches must contain."""

    source: str
    regex: re.Pattern[str]
    literal: str
    literals: tuple[str, ...] = ()  # every fixed text a match must contain (doctor checks them first)


def compile_log_pattern(source: str) -> LogPattern:
    """Compile a knowledge-base log pattern, refusing what could make matching slow or ambiguous.

    Refused: syntax errors; inline flags (patterns are case-sensitive, applied to one line at a
    time); back-references; a repeat inside a repeat (``(a+)+``, ``(.*)*``) or an alternation inside
    a repeat (``(a|ab)*``), which Python's backtracking ``re`` can take exponential time on; more than
    two ``.*``/``.+``; and no fixed text of at least four characters outside optional parts and
    alternatives. Raises ``ValueError('problem || fix')`` in the loader's message style.
    """
    shown = source if len(source) <= 60 else source[:57] + "..."
    if not source.strip() or "\n" in source:
        raise ValueError("a pattern must be one non-empty line || write one regular expression per list item")
    try:
        parsed = _sre_parse.parse(source)
        regex = re.compile(source, re.MULTILINE)
    except re.error as exc:
        raise ValueError(f"pattern '{shown}' is not a valid regular expression: {exc} "
                         "|| fix the syntax: Python re, with literal . ( ) [ ] + * ? escaped by a backslash") from None
    if parsed.state.flags & ~(re.UNICODE | re.ASCII):
        raise ValueError(f"pattern '{shown}' sets inline flags || remove (?i)/(?s)/(?m)/(?x); "
                         "patterns are case-sensitive and see one line at a time")
    _check_safe(parsed, shown, in_repeat=False)
    wildcards = _count_wildcards(parsed)
    if wildcards > MAX_WILDCARDS:
        raise ValueError(f"pattern '{shown}' has {wildcards} '.*' or '.+', more than {MAX_WILDCARDS} "
                         "|| replace some with the fixed text that is really there")
    runs: list[str] = []
    _required_literals(parsed, runs)
    literal = max(runs, key=len, default="")
    if len(literal) < MIN_LITERAL:
        raise ValueError(f"pattern '{shown}' has no fixed text of at least {MIN_LITERAL} characters "
                         "outside optional parts || include a literal piece of the message, e.g. its first words")
    return LogPattern(source, regex, literal, tuple(sorted({r for r in runs if r}, key=len, reverse=True)))


_REPEATS = {_sre.MAX_REPEAT, _sre.MIN_REPEAT} | ({_sre.POSSESSIVE_REPEAT} if hasattr(_sre, "POSSESSIVE_REPEAT") else set())


def _check_safe(seq, shown: str, in_repeat: bool) -> None:
    for op, av in seq:
        if op in _REPEATS:
            _lo, hi, body = av
            repeats = hi == _sre.MAXREPEAT or hi > 1
            if repeats and in_repeat:
                raise ValueError(f"pattern '{shown}' nests a repeat inside a repeat, which can take exponential "
                                 "time || rewrite it without nested quantifiers, e.g. '(a+)+' as 'a+'")
            _check_safe(body, shown, in_repeat or repeats)
        elif op is _sre.BRANCH:
            if in_repeat:
                raise ValueError(f"pattern '{shown}' repeats an alternation, which can take exponential time "
                                 "|| use a character class or split it into separate patterns")
            for alternative in av[1]:
                _check_safe(alternative, shown, in_repeat)
        elif op is _sre.SUBPATTERN:
            if av[1] or av[2]:
                raise ValueError(f"pattern '{shown}' sets inline flags || remove the (?flags:...) group")
            _check_safe(av[-1], shown, in_repeat)
        elif op in (_sre.GROUPREF, _sre.GROUPREF_EXISTS):
            raise ValueError(f"pattern '{shown}' uses a back-reference || match the text itself instead")
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            _check_safe(av[1], shown, in_repeat)
        elif op is getattr(_sre, "ATOMIC_GROUP", None):
            _check_safe(av, shown, in_repeat)


def _count_wildcards(seq) -> int:
    count = 0
    for op, av in seq:
        if op in _REPEATS:
            _lo, hi, body = av
            if hi == _sre.MAXREPEAT and len(body) == 1 and body[0][0] is _sre.ANY:
                count += 1
            count += _count_wildcards(body)
        elif op is _sre.BRANCH:
            count += max((_count_wildcards(a) for a in av[1]), default=0)
        elif op is _sre.SUBPATTERN:
            count += _count_wildcards(av[-1])
    return count


def _required_literals(seq, out: list[str]) -> None:
    """Runs of literal characters that every match must contain (not inside options or alternatives)."""
    run: list[str] = []
    for op, av in seq:
        if op is _sre.LITERAL:
            run.append(chr(av))
            continue
        if run:
            out.append("".join(run))
            run = []
        if op is _sre.SUBPATTERN:
            _required_literals(av[-1], out)
        elif op in _REPEATS and av[0] >= 1:
            _required_literals(av[2], out)
    if run:
        out.append("".join(run))


def _log_pattern(value: str) -> str:
    compile_log_pattern(value)
    return value


IssueId = Annotated[str, AfterValidator(_issue_id)]
Reference = Annotated[str, AfterValidator(_reference)]
OneLine = Annotated[str, AfterValidator(_one_line)]
PatternText = Annotated[str, AfterValidator(_log_pattern)]


CheckName = Annotated[str, AfterValidator(_check_name)]


class RawIssue(Strict):
    id: IssueId = Field(description="Unique id, lowercase words joined by '-'; profiles refer to it")
    title: OneLine = Field(description="One-line summary")
    kind: Literal["failure", "advisory"] = Field(description="failure: something breaks; advisory: a field note")
    seed: OneLine | None = Field(None, description="Section of the seed notes this comes from")
    stacks: list[Annotated[str, AfterValidator(_stack_name)]] = Field(description="Stacks it affects, or 'any'")
    symptom: OneLine | None = Field(None, description="The line users see (required for failures)")
    cause: str = Field(description="Why it happens")
    fix: str = Field(description="How to fix it by hand today")
    prevention: str = Field(description="How a stackbuild image prevents it")
    references: list[Reference] = Field([], description="owner/repo#number threads")
    patterns: list[PatternText] = Field([], description="Regexes matched per log line after ANSI colours are "
                                                        "stripped; a failure needs at least one")
    context: list[PatternText] = Field([], description="When present, a pattern hit only counts if a context "
                                                       "pattern matches within context_window lines of it")
    context_window: int = Field(DEFAULT_CONTEXT_WINDOW, ge=1, le=100_000,
                                description="Lines before or after a hit searched for context")
    generic: bool = Field(False, description="Its lines are downstream symptoms that more specific entries "
                                             "explain; it ranks below them")
    fixed_in: OneLine | None = Field(None, description="Upstream version or change that fixed it")
    fix_era: dict[str, str] = Field({}, description="Fix for one release, keyed 'stack@release'")
    prevented_by: list[OneLine] = Field([], description="The profile mechanisms that prevent it (pin, patch, ...)")
    proven_by: list[CheckName] = Field([], description="Smoke checks that "
                                                                                         "prove the prevention")


class RawKnowledgeBase(Strict):
    issues: list[RawIssue]


@dataclass(frozen=True)
class KnownIssue:
    """One known failure: what it looks like, why it happens, how to fix and prevent it."""

    id: str
    title: str
    kind: str
    seed: str | None
    stacks: tuple[str, ...]
    symptom: str | None
    cause: str
    fix: str
    prevention: str
    references: tuple[str, ...]
    patterns: tuple[LogPattern, ...] = ()
    context: tuple[LogPattern, ...] = ()
    context_window: int = DEFAULT_CONTEXT_WINDOW
    generic: bool = False
    fixed_in: str | None = None
    fix_era: tuple[tuple[str, str], ...] = ()
    prevented_by: tuple[str, ...] = ()
    proven_by: tuple[str, ...] = ()

    def fix_for(self, stack: str | None, release: str | None) -> str:
        """The fix for ``stack@release`` when the entry has one, else the general fix."""
        if stack and release:
            for key, text in self.fix_era:
                if key == f"{stack}@{release}":
                    return text
        return self.fix


def load_knowledge_base(path: Path | None = None) -> dict[str, KnownIssue]:
    """Load and validate the knowledge base; every problem is reported at once.

    Stack names in ``stacks`` and the ``stack@release`` keys of ``fix_era`` are checked against
    the shipped stack profiles (their names and release keys, read without loading them).
    """
    path = path or stacks_dir() / "known-issues.yaml"
    return _load_cached(path.resolve())


def stack_catalog(directory: Path | None = None) -> dict[str, tuple[str, ...]]:
    """Stack name -> release names of the profiles in ``directory`` (default: the shipped ones).

    Read shallowly (name and release keys only) so the knowledge base can be checked without
    loading profiles, which themselves load the knowledge base. Unreadable profiles are skipped:
    the profile loader reports them.
    """
    directory = directory or stacks_dir()
    catalog: dict[str, tuple[str, ...]] = {}
    for file in sorted(directory.glob("*.yaml")):
        if file.stem == "known-issues":
            continue
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and isinstance(data.get("releases"), dict):
            catalog[file.stem] = tuple(str(k) for k in data["releases"])
    return catalog


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> dict[str, KnownIssue]:
    display = display_path(path)
    source, problems = load_yaml(path, display, MAX_KNOWLEDGE_BYTES)
    if source is None or problems:
        raise ProfileError(problems)
    try:
        raw = RawKnowledgeBase.model_validate(source.data)
    except ValidationError as exc:
        raise ProfileError(problems_from_validation(exc, source, (), RawKnowledgeBase)) from None
    catalog = stack_catalog()
    issues: dict[str, KnownIssue] = {}

    def problem(where: tuple, path_text: str, message: str, fix: str) -> None:
        problems.append(Problem(display, source.line_of(where), path_text, message, fix))

    for index, item in enumerate(raw.issues):
        at = ("issues", index)
        if item.id in issues:
            problem((*at, "id"), f"issues[{index}].id", f"duplicate id '{item.id}'", "give every issue a unique id")
            continue
        if item.kind == "failure" and item.symptom is None:
            problem(at, f"issues[{index}].symptom", "a failure needs the line users see", "add 'symptom'")
        if item.kind == "failure" and not item.patterns:
            problem(at, f"issues[{index}].patterns", "a failure needs at least one log pattern",
                    "add 'patterns' with a regex for the line users see, or make it kind: advisory")
        if item.context and not item.patterns:
            problem((*at, "context"), f"issues[{index}].context", "context without patterns has nothing to confirm",
                    "add 'patterns' or remove 'context'")
        for n, name in enumerate(item.stacks):
            if name != "any" and name not in catalog:
                problem((*at, "stacks", n), f"issues[{index}].stacks[{n}]", f"'{name}' is not a stack",
                        f"use 'any' or one of: {', '.join(catalog)}")
        for key in item.fix_era:
            where, shown = (*at, "fix_era", key), f"issues[{index}].fix_era.{key}"
            match = ERA_KEY.match(key)
            if not match:
                problem(where, shown, f"'{key}' is not STACK@RELEASE", "write the key like qlora@2023.07")
            elif match["stack"] not in catalog:
                problem(where, shown, f"'{match['stack']}' is not a stack", f"use one of: {', '.join(catalog)}")
            elif match["release"] not in catalog[match["stack"]]:
                problem(where, shown, f"stack '{match['stack']}' has no release '{match['release']}'",
                        f"use one of: {', '.join(catalog[match['stack']])}")
            elif not item.fix_era[key].strip():
                problem(where, shown, "the era fix is empty", "write the fix for that release")
        issues[item.id] = KnownIssue(
            id=item.id, title=item.title, kind=item.kind, seed=item.seed, stacks=tuple(item.stacks),
            symptom=item.symptom, cause=item.cause.strip(), fix=item.fix.strip(),
            prevention=item.prevention.strip(), references=tuple(item.references),
            patterns=tuple(compile_log_pattern(p) for p in item.patterns),
            context=tuple(compile_log_pattern(p) for p in item.context),
            context_window=item.context_window, generic=item.generic, fixed_in=item.fixed_in,
            fix_era=tuple((k, " ".join(v.split())) for k, v in sorted(item.fix_era.items())),
            prevented_by=tuple(item.prevented_by), proven_by=tuple(item.proven_by),
        )
    if problems:
        raise ProfileError(problems)
    return issues
