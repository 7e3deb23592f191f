"""The knowledge base of known failures (stacks/known-issues.yaml).

Profiles name the issues they prevent by id; an unknown id is a load error. A later stage
(doctor) adds log patterns to the same entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, ValidationError

from .errors import ProfileError, Problem
from .resources import display_path, stacks_dir
from .validation import ONE_LINE, Strict, problems_from_validation
from .yamlsrc import load_yaml

ISSUE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
REFERENCE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#\d+$")
STACK_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


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


IssueId = Annotated[str, AfterValidator(_issue_id)]
OneLine = Annotated[str, AfterValidator(_one_line)]


class RawIssue(Strict):
    id: IssueId
    title: OneLine
    kind: Literal["failure", "advisory"]
    seed: OneLine | None = None
    stacks: list[Annotated[str, AfterValidator(_stack_name)]]
    symptom: OneLine | None = None
    cause: str
    fix: str
    prevention: str
    references: list[Annotated[str, AfterValidator(_reference)]] = []


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


def load_knowledge_base(path: Path | None = None) -> dict[str, KnownIssue]:
    """Load and validate the knowledge base; every problem is reported at once."""
    path = path or stacks_dir() / "known-issues.yaml"
    return _load_cached(path.resolve())


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> dict[str, KnownIssue]:
    display = display_path(path)
    source, problems = load_yaml(path, display)
    if source is None or problems:
        raise ProfileError(problems)
    try:
        raw = RawKnowledgeBase.model_validate(source.data)
    except ValidationError as exc:
        raise ProfileError(problems_from_validation(exc, source, (), RawKnowledgeBase)) from None
    issues: dict[str, KnownIssue] = {}
    for index, item in enumerate(raw.issues):
        if item.id in issues:
            problems.append(
                Problem(display, source.line_of(("issues", index, "id")), f"issues[{index}].id",
                        f"duplicate id '{item.id}'", "give every issue a unique id")
            )
            continue
        if item.kind == "failure" and item.symptom is None:
            problems.append(
                Problem(display, source.line_of(("issues", index)), f"issues[{index}].symptom",
                        "a failure needs the line users see", "add 'symptom'")
            )
        issues[item.id] = KnownIssue(
            id=item.id, title=item.title, kind=item.kind, seed=item.seed, stacks=tuple(item.stacks),
            symptom=item.symptom, cause=item.cause.strip(), fix=item.fix.strip(),
            prevention=item.prevention.strip(), references=tuple(item.references),
        )
    if problems:
        raise ProfileError(problems)
    return issues
