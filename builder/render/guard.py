"""The last guard before a Dockerfile leaves stackbuild: its instructions must be exactly the plan's.

Every value that reaches a Dockerfile is validated or quoted first; this guard is what makes a
missed case an error instead of an image. The template is rendered twice: once with the plan's
values, and once as a *skeleton* in which every interpolated value is replaced by a placeholder,
so the skeleton's instructions depend only on the plan's structure (its loops and conditions),
never on what a profile wrote. Both are parsed as Docker's parser does (parser directives,
comment lines dropped, continuation lines joined, empty continuation lines skipped), and the
rendered Dockerfile must have the same directives and, instruction by instruction, the same
keyword and the same fixed text around the values. A value that adds a line, ends a continuation
early, starts a heredoc or smuggles a control character changes that, and rendering fails (exit 5).
Before that, the real rendering refuses any interpolated value that holds a line break or control
character (``checked_value``), naming the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import RenderError

# What the skeleton rendering puts in place of each interpolated value.
PLACEHOLDER = "\x00value\x00"

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*\Z")
_HEREDOC = re.compile(r"<<-?\s*[\"']?[A-Za-z_]")
_HEREDOC_INSTRUCTIONS = {"RUN", "COPY", "ADD"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, its joined text, and the line it starts on."""

    keyword: str
    text: str
    line: int


class Composed(str):
    """Template text a macro composed (the ``composed`` filter): its own values went through ``finalize``
    already, one by one, so it passes as it is. Only templates/partials/ apply it, to a macro's output."""


_UNSAFE_IN_VALUE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def checked_value(value: object) -> object:
    """Jinja ``finalize`` of the real rendering: a value with a line break or control character is refused.

    The first line of defence, before the instruction comparison: it names the value itself.
    Whitespace-only values are the templates' own layout (see ``skeleton_value``).
    """
    if isinstance(value, Composed):
        return value
    if isinstance(value, str) and value.strip() and _UNSAFE_IN_VALUE.search(value):
        raise RenderError(f"refusing to render {value[:80]!r} into a Dockerfile: it holds a line break or control "
                          "character (a profile value that validation missed; please report it)")
    return value


def skeleton_value(value: object) -> object:
    """Jinja ``finalize`` of the skeleton rendering: every value becomes the placeholder.

    Whitespace-only values stay as they are: the templates use them for layout (a newline and
    indentation after a continuation), and they cannot carry an instruction.
    """
    if isinstance(value, Composed) or (isinstance(value, str) and not value.strip()):
        return value
    return PLACEHOLDER


def parse_dockerfile(text: str) -> tuple[tuple[tuple[str, str], ...], tuple[Instruction, ...]]:
    """The parser directives and instructions of a Dockerfile, read as Docker's parser reads them.

    Lines end at ``\\n`` only (a ``\\r`` before it is dropped), as in Docker; a trailing escape
    character continues the instruction on the next line; comment lines and whitespace-only lines
    inside a continuation are skipped.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]

    directives: list[tuple[str, str]] = []
    index = 0
    escape = "\\"
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index].strip())
        if not match:
            break
        name, value = match[1].lower(), match[2]
        directives.append((name, value))
        if name == "escape":
            escape = value
        index += 1

    continuation = re.compile(re.escape(escape) + r"[ \t]*\Z") if escape else None
    instructions: list[Instruction] = []
    while index < len(lines):
        start = index
        line = lines[index].lstrip(" \t")
        index += 1
        if not line or line.startswith("#"):
            continue
        text_parts = []
        ended = True
        if continuation and continuation.search(line):
            line, ended = continuation.sub("", line), False
        text_parts.append(line)
        while not ended and index < len(lines):
            raw = lines[index]
            index += 1
            stripped = raw.lstrip(" \t")
            if stripped.startswith("#") or not stripped:
                continue
            if continuation and continuation.search(raw):
                raw, ended = continuation.sub("", raw), False
            else:
                ended = True
            text_parts.append(raw)
        joined = "".join(text_parts)
        keyword = joined.split(None, 1)[0].upper() if joined.split() else ""
        instructions.append(Instruction(keyword, joined, start + 1))
    return tuple(directives), tuple(instructions)


def _shape(instruction: Instruction) -> re.Pattern[str]:
    """A pattern that matches the instruction with any single-line text in place of each value."""
    parts = instruction.text.split(PLACEHOLDER)
    return re.compile(r"[^\n]*?".join(re.escape(part) for part in parts), re.DOTALL)


def _describe(instruction: Instruction) -> str:
    text = instruction.text if len(instruction.text) <= 120 else instruction.text[:117] + "..."
    return f"line {instruction.line}: {text!r}"


def check_dockerfile(rendered: str, skeleton: str, what: str) -> None:
    """Raise RenderError unless ``rendered`` has exactly the instructions of ``skeleton``."""
    found = _CONTROL.search(rendered)
    if found is not None:
        bad = found[0]
        line = rendered[:found.start()].count("\n") + 1
        raise RenderError(f"refusing to write the Dockerfile of {what}: line {line} has the control character "
                          f"{bad!r} (a profile value that validation missed; please report it)")
    got_directives, got = parse_dockerfile(rendered)
    want_directives, want = parse_dockerfile(skeleton)
    if len(got_directives) != len(want_directives):
        raise RenderError(f"refusing to write the Dockerfile of {what}: it has parser directives "
                          f"{[f'{n}={v}' for n, v in got_directives]} where the plan has "
                          f"{len(want_directives)} (a profile value that validation missed; please report it)")
    for position in range(max(len(got), len(want))):
        mine = got[position] if position < len(got) else None
        plan = want[position] if position < len(want) else None
        if mine is None or plan is None or mine.keyword != plan.keyword or not _shape(plan).fullmatch(mine.text) \
                or (mine.keyword in _HEREDOC_INSTRUCTIONS and _HEREDOC.search(mine.text)):
            if mine is None:
                problem = f"a {plan.keyword} instruction of the plan is missing"  # type: ignore[union-attr]
            elif plan is None:
                problem = f"it has an instruction the plan does not ({_describe(mine)})"
            else:
                problem = f"instruction {position + 1} is not the plan's ({_describe(mine)})"
            raise RenderError(f"refusing to write the Dockerfile of {what}: {problem}; a profile value that "
                              "validation missed changed its instructions (please report it)")
