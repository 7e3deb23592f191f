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

from ..errors import Problem
from ..safety.files import MAX_PROFILE_BYTES, read_text

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


# Bounds on what a YAML file may expand to: its nodes counted with every alias expanded, and
# its nesting. A shipped profile has a few hundred nodes nested 8 deep; the knowledge base ~10,000.
MAX_NODES = 100_000
MAX_DEPTH = 64


def _bounds_problem(root: yaml.Node) -> str | None:
    """Why ``root`` is too large or deep once its aliases are expanded, or None.

    Counted on the node graph, where an alias is one shared node, before anything is constructed:
    "billion laughs" anchors stay a few hundred nodes here and cost nothing to measure.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if done:
            on_path.discard(key)
            size[key] = min(1 + sum(size[id(c)] for c in children), MAX_NODES + 1)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                return f"it expands to more than {MAX_NODES:,} values (anchors and aliases included)"
            if depth[key] > MAX_DEPTH:
                return f"it is nested more than {MAX_DEPTH} levels deep"
            continue
        if key in size:
            continue
        if key in on_path:
            return "an alias refers to a node that contains it (a recursive anchor)"
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
        if len(on_path) > MAX_DEPTH:
            return f"it is nested more than {MAX_DEPTH} levels deep"
    return None


# libyaml's parser when PyYAML has it (ten times faster on a large hostile file), else PyYAML's own
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _too_deep(text: str) -> bool:
    """Whether ``text`` nests sequences and mappings (flow or block) more than MAX_DEPTH levels deep.

    Counted on the parser's events, so brackets inside a quoted or plain string do not count, and
    stopped at the first event past MAX_DEPTH: a "[[[[…" of any length costs only its first levels
    (PyYAML's composer recurses per level, and its scanner is slow in deep flow nesting). A syntax
    error is left for the composing parse to report with its line.
    """
    loader = _LOADER(text)
    depth = 0
    try:
        while (event := loader.get_event()) is not None:
            if isinstance(event, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    return True
            elif isinstance(event, _CLOSE):
                depth -= 1
    except yaml.YAMLError as exc:
        # libyaml's own limit (1,000 levels), reached while its scanner looks ahead
        return "nesting depth" in str(getattr(exc, "problem", "") or exc)
    finally:
        loader.dispose()
    return False


def load_yaml(path: Path, display: str, limit: int = MAX_PROFILE_BYTES) -> tuple[YamlSource | None, list[Problem]]:
    """Load ``path``; return the source and the problems found (syntax, duplicates, unreadable, too large).

    Refused before it can use memory: a file larger than ``limit`` or not a regular file, and a
    document nested deeper than MAX_DEPTH or expanding (aliases included) past MAX_NODES values.
    """
    try:
        text = read_text(path, limit)
    except FileNotFoundError:
        return None, [Problem(display, 0, "", "file not found", "check the path")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(display, 0, "", f"cannot read file: {exc}", "make it a readable UTF-8 file")]
    return load_yaml_text(text, display)


def load_yaml_text(text: str, display: str) -> tuple[YamlSource | None, list[Problem]]:
    """``load_yaml`` of text already read (within its size limit): the same bounds and problems."""
    if _too_deep(text):
        return None, [Problem(display, 0, "", f"refused: it is nested more than {MAX_DEPTH} levels deep",
                              "write the profile out plainly")]
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        reason = _bounds_problem(root) if root is not None else None
        if reason is not None:
            return None, [Problem(display, 0, "", f"refused: {reason}", "write the profile out plainly")]
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        reason = exc.problem or str(exc)
        return None, [Problem(display, line, "", f"YAML syntax error: {reason}", "fix the YAML syntax")]
    except yaml.YAMLError as exc:
        return None, [Problem(display, 0, "", f"YAML error: {exc}", "fix the YAML syntax")]
    except RecursionError:
        return None, [Problem(display, 0, "", f"refused: it is nested more than {MAX_DEPTH} levels deep",
                              "write the profile out plainly")]
    finally:
        loader.dispose()
    source = YamlSource(display, data)
    problems: list[Problem] = []
    if root is not None:
        _walk(root, (), source.lines, problems, display)
    return source, problems
