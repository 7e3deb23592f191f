"""Read a YAML file into plain data plus the line of every key, refusing duplicate keys.

Profiles are reported as ``file:LINE: field.path: problem``; that needs the line of each field,
which plain ``yaml.safe_load`` forgets. Duplicate keys are an error (PyYAML would silently keep
the last one, hiding a pin that someone thought was in force).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

PathKey = tuple[str | int, ...]


@dataclass
class YamlSource:
    """Parsed YAML data and the 1-based line of every mapping key and list item."""

    file: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: PathKey) -> int:
        """Line of the deepest known node on ``path`` (its parents when it is missing)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def _constructed_key(node: yaml.Node):
    if not isinstance(node, yaml.ScalarNode):
        return None
    try:
        value = yaml.constructor.SafeConstructor().construct_object(node)
    except yaml.YAMLError:
        return None
    return value if isinstance(value, (str, int, float, bool)) else None


def _walk(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], problems: list[Problem], file: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(
                        file,
                        line,
                        ".".join(str(p) for p in (*path, key)),
                        f"duplicate key (first defined on line {seen[key]})",
                        "keep one of them",
                    )
                )
                continue
            seen[key] = line
            lines[(*path, key)] = line
            # Unquoted keys such as 2023.06 load as numbers; index them by that value too.
            constructed = _constructed_key(key_node)
            if constructed is not None and constructed != key:
                lines.setdefault((*path, constructed), line)
            _walk(value_node, (*path, key), lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, problems, file)


def load_yaml(path: Path, display: str) -> tuple[YamlSource | None, list[Problem]]:
    """Load ``path``; return the source and the problems found (syntax, duplicates, unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem(display, 0, "", "file not found", "check the path")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(display, 0, "", f"cannot read file: {exc}", "make it a readable UTF-8 file")]
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        reason = exc.problem or str(exc)
        return None, [Problem(display, line, "", f"YAML syntax error: {reason}", "fix the YAML syntax")]
    except yaml.YAMLError as exc:
        return None, [Problem(display, 0, "", f"YAML error: {exc}", "fix the YAML syntax")]
    source = YamlSource(display, data)
    problems: list[Problem] = []
    if root is not None:
        _walk(root, (), source.lines, problems, display)
    return source, problems
