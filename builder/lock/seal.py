"""A lock's seal: the sha256 of its header and of each section, recorded in its header.

A lock is edited by hand sooner or later: a package added with a valid hash, a transitive
version changed, a line deleted, a second ``# [packages]`` header that silently splits a
section. Its recorded inputs cannot catch that; the seal does. ``stackbuild lock`` writes one
``# sha256 header: …`` line and one ``# sha256 [section]: …`` line per section; ``check_seal``
recomputes them and names the section (and its line) whose text changed, a section that is
there twice, one the lock was not made with, and one that went missing. Any edit, even of
whitespace, breaks the seal: the cure is always `stackbuild lock`, never an edit.
"""

from __future__ import annotations

import hashlib
import re

from ..errors import LockError

SEAL = re.compile(r"^# sha256 (?P<part>header|\[[a-z0-9:._-]+\]): (?P<digest>[0-9a-f]{64})\Z")
SECTION = re.compile(r"^# \[(?P<key>[a-z0-9:._-]+)\]\Z")
KNOWN_SECTION = re.compile(r"^(?:bootstrap|torch|toolkit|packages|last|compiled:[a-z0-9._-]+)\Z")


def _digest(lines: list[str]) -> str:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _split(text: str) -> tuple[list[str], list[tuple[str, int, list[str]]]]:
    """The header lines (without seal lines) and each section: (key, its header's line number, its lines)."""
    header: list[str] = []
    sections: list[tuple[str, int, list[str]]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if match := SECTION.match(line):
            sections.append((match["key"], number, []))
        elif sections:
            sections[-1][2].append(line)
        elif not SEAL.match(line):
            header.append(line)
    return header, sections


def seal_lines(text: str) -> list[str]:
    """The seal of an unsealed lock text (its header, then its sections in order)."""
    header, sections = _split(text)
    return [f"# sha256 header: {_digest(header)}"] + [f"# sha256 [{key}]: {_digest(lines)}"
                                                      for key, _, lines in sections]


def check_seal(text: str, where: str) -> None:
    """LockError, naming the line, unless every part of ``text`` is exactly what its seal says."""
    recorded: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if match := SEAL.match(line):
            recorded[match["part"]] = (match["digest"], number)
    again = "make it again with `stackbuild lock`, never by editing it"
    if not recorded:
        raise LockError(f"{where}: the lock has no sha256 seal (made by an older stackbuild, or edited); {again}")
    header, sections = _split(text)
    digest, line = recorded.get("header", ("", 1))
    if digest != _digest(header):
        raise LockError(f"{where}:{line}: the lock's header was edited after the lock was made; {again}")
    seen: dict[str, int] = {}
    for key, number, lines in sections:
        if key in seen:
            raise LockError(f"{where}:{number}: a second [{key}] section (the first is on line {seen[key]}); {again}")
        seen[key] = number
        if not KNOWN_SECTION.match(key):
            raise LockError(f"{where}:{number}: [{key}] is not a section of a stackbuild lock; {again}")
        expected = recorded.get(f"[{key}]")
        if expected is None:
            raise LockError(f"{where}:{number}: section [{key}] is not one the lock was made with; {again}")
        for offset, body_line in enumerate(lines, number + 1):
            if body_line.lstrip().startswith("#"):
                raise LockError(f"{where}:{offset}: a comment inside section [{key}] ({body_line.strip()[:60]!r}); "
                                f"{again}")
        if expected[0] != _digest(lines):
            end = number + len(lines)
            raise LockError(f"{where}:{number}: section [{key}] (lines {number}-{end}) was edited after the lock was "
                            f"made: its sha256 is not the one recorded on line {expected[1]}; {again}")
    for part, (_, number) in recorded.items():
        if part != "header" and part[1:-1] not in seen:
            raise LockError(f"{where}:{number}: the lock was made with a section {part} that is not there any more; "
                            f"{again}")
    order = [part[1:-1] for part, _ in sorted(recorded.items(), key=lambda item: item[1][1]) if part != "header"]
    if order != list(seen):
        moved = next(key for key, want in zip(seen, order) if key != want)
        raise LockError(f"{where}:{seen[moved]}: section [{moved}] was moved (the lock's order is "
                        f"{', '.join(order)}); {again}")
