"""A new release block in a profile's text: another release's block copied, its versions moved, inserted after it.

`stackbuild propose` writes its release this way instead of dumping YAML, so the file keeps its comments,
order, quoting and layout, and the new block reads like the one it came from. Every edit is found through
the parsed file's line numbers (builder/profile/source.py), and the result is parsed again and compared
with what was asked for: a layout this cannot edit is an error, never a wrong profile.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from packaging.utils import canonicalize_name

from ..errors import Problem, ProfileError
from .source import YamlSource, load_yaml_text


@dataclass(frozen=True)
class ReleaseEdit:
    """What the new release changes from the block it is copied from."""

    name: str
    date: str  # YYYY-MM-DD
    summary: str
    versions: dict[str, tuple[str, str]]  # canonical package name -> (old, new), torch included
    accelerator: tuple[str, str] | None = None  # (the accelerator's version field, its new value); None: unchanged
    targets: dict[str, tuple[str, str]] = field(default_factory=dict)  # target -> (base, python) that replace its own
    drop_env: tuple[str, ...] = ()  # targets whose env is dropped (it belonged to the base they leave)
    held: tuple[dict[str, Any], ...] = ()  # the held entries, as the profile writes them
    make_default: bool = False


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _scalar(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's), so no value can change the structure."""
    return json.dumps(value, ensure_ascii=True)


def release_span(lines: list[str], source: YamlSource, release: str) -> tuple[int, int]:
    """The 0-based [start, end) lines of ``release``'s block: its key line to the last line before the next
    key at its indent or less (comments just above that key belong to it)."""
    start = source.lines[("releases", release)] - 1
    indent = _indent(lines[start])
    end = start + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and _indent(line) <= indent:
            break
        end += 1
    while end > start + 1 and (not lines[end - 1].strip()
                               or (lines[end - 1].lstrip().startswith("#") and _indent(lines[end - 1]) <= indent + 2
                                   and _next_is_sibling(lines, end, indent))):
        end -= 1
    return start, end


def _next_is_sibling(lines: list[str], end: int, indent: int) -> bool:
    return end >= len(lines) or _indent(lines[end]) <= indent


def _field_span(lines: list[str], at: int, block_end: int) -> tuple[int, int]:
    """The [start, end) lines of the field whose key is on line ``at``: it and every deeper line after it."""
    indent = _indent(lines[at])
    end = at + 1
    while end < block_end and (not lines[end].strip() or _indent(lines[end]) > indent
                               or lines[end].lstrip().startswith("- ") and _indent(lines[end]) == indent):
        end += 1
    return at, end


def version_pattern(name: str, version: str) -> re.Pattern[str]:
    """``name==version`` as a profile may write it (any case, '-', '_' or '.' between the name's words, extras)."""
    words = re.split(r"[-_.]+", canonicalize_name(name))
    spelled = r"[-_.]+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![A-Za-z0-9._-])((?i:{spelled})(?:\[[^\]\s]*\])?==){re.escape(version)}(?![A-Za-z0-9.+])")


def insert_release(text: str, display: str, base: str, edit: ReleaseEdit) -> str:
    """``text`` with a copy of release ``base``'s block, edited by ``edit``, inserted after it."""
    source, problems = load_yaml_text(text, display)
    if source is None or not isinstance(source.data, dict) or base not in (source.data.get("releases") or {}):
        raise ProfileError(problems or [Problem(display, 1, "releases", f"no release '{base}' to copy",
                                                "name a release of the profile")])
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start, end = release_span(lines, source, base)
    block = lines[start:end]
    at = lambda *path: source.lines[("releases", base, *path)] - 1 - start  # noqa: E731 - a line in the block
    raw = source.data["releases"][base]

    def set_field(index: int, key: str, value: str) -> None:
        line = block[index]
        block[index] = " " * _indent(line) + f"{key}: {_scalar(value)}\n"

    key_line = block[0]
    block[0] = " " * _indent(key_line) + f"{_scalar(edit.name)}:\n"
    set_field(at("date"), "date", edit.date)
    set_field(at("summary"), "summary", edit.summary)
    field_indent = _indent(block[at("date")])
    drop: set[int] = set()
    if raw.get("era"):
        drop.add(at("era"))
    old_torch, new_torch = edit.versions.get("torch", (raw["torch"], raw["torch"]))
    set_field(at("torch"), "torch", new_torch)
    if edit.accelerator is not None:
        set_field(at(edit.accelerator[0]), edit.accelerator[0], edit.accelerator[1])
    for target, (base_ref, python) in edit.targets.items():
        set_field(at("targets", target, "base"), "base", base_ref)
        set_field(at("targets", target, "python"), "python", python)
        if target in edit.drop_env and ("releases", base, "targets", target, "env") in source.lines:
            first, last = _field_span(block, at("targets", target, "env"), len(block))
            drop.update(range(first, last))
    if "held" in raw:
        first, last = _field_span(block, at("held"), len(block))
        drop.update(range(first, last))
    block = [line for index, line in enumerate(block) if index not in drop]
    body = "".join(block[1:])
    for name, (old, new) in sorted(edit.versions.items()):
        if name != "torch" and old != new:
            body = version_pattern(name, old).sub(lambda m, new=new: m.group(1) + new, body)
    held = ""
    if edit.held:
        pad = " " * field_indent
        held = f"{pad}held:\n" + "".join(
            f"{pad}  - " + f"\n{pad}    ".join(_held_lines(entry)) + "\n" for entry in edit.held)
    new_block = block[0] + body + held
    before, after = lines[:end], lines[end:]
    if edit.make_default:
        index = source.lines[("default_release",)] - 1
        before[index] = " " * _indent(before[index]) + f"default_release: {_scalar(edit.name)}\n"
    result = "".join(before) + new_block + "".join(after)
    _check(text, result, display, base, edit)
    return result


def _held_lines(entry: dict[str, Any]) -> list[str]:
    out = []
    for key, value in entry.items():
        if isinstance(value, list):
            if value:
                out.append(f"{key}:")
                out.extend(f"  - {_scalar(item)}" for item in value)
        elif value is not None:
            out.append(f"{key}: {_scalar(str(value))}")
    return out


def _check(old_text: str, new_text: str, display: str, base: str, edit: ReleaseEdit) -> None:
    """The edited text parses, its other content is unchanged, and the new release says what was asked."""
    old, new = yaml.safe_load(old_text), yaml.safe_load(new_text)
    wrong = []
    old_releases, new_releases = dict(old.get("releases") or {}), dict(new.get("releases") or {})
    added = new_releases.pop(edit.name, None)
    if new_releases != old_releases:
        wrong.append("the other releases changed")
    rest_old = {k: v for k, v in old.items() if k not in ("releases", "default_release")}
    rest_new = {k: v for k, v in new.items() if k not in ("releases", "default_release")}
    if rest_old != rest_new:
        wrong.append("the stack's own fields changed")
    expected_default = edit.name if edit.make_default else old.get("default_release")
    if new.get("default_release") != expected_default:
        wrong.append("default_release is not what was asked")
    if not isinstance(added, dict):
        wrong.append(f"release {edit.name} is not in the result")
    else:
        if added.get("date") != edit.date or added.get("summary") != edit.summary:
            wrong.append("date or summary")
        if added.get("torch") != edit.versions.get("torch", (None, old_releases[base]["torch"]))[1]:
            wrong.append("torch")
        if edit.accelerator is not None and added.get(edit.accelerator[0]) != edit.accelerator[1]:
            wrong.append(edit.accelerator[0])
        for target, (base_ref, python) in edit.targets.items():
            spec = (added.get("targets") or {}).get(target) or {}
            if spec.get("base") != base_ref or spec.get("python") != python:
                wrong.append(f"target {target}")
        if len(added.get("held") or []) != len(edit.held):
            wrong.append("held")
        found = _pins(added)
        for name, (old_version, new_version) in edit.versions.items():
            if name != "torch" and found.get(name, new_version) != new_version:
                wrong.append(f"{name} is {found.get(name)}, not {new_version}")
    if wrong:
        raise ProfileError([Problem(display, 1, f"releases.{edit.name}",
                                    "the new release block could not be written into this file's layout ("
                                    + "; ".join(wrong) + ")", "write the release by hand, copying " + base)])


def _pins(release: dict) -> dict[str, str]:
    """Exact pins of a raw release dict, by canonical name."""
    texts: list[str] = [*(release.get("bootstrap") or []), *(release.get("with_torch") or [])]
    for comp in release.get("compiled") or []:
        texts += [comp.get("package", ""), *(comp.get("requires") or [])]
    for key in ("packages", "last_packages"):
        texts += [p if isinstance(p, str) else p.get("requirement", "") for p in release.get(key) or []]
    for option in (release.get("options") or {}).values():
        texts += [*(option.get("packages") or []), *(option.get("last_packages") or [])]
    out = {}
    for text in texts:
        m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==(\S+)$", str(text))
        if m:
            out[canonicalize_name(m[1])] = m[2]
    return out
