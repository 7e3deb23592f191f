"""Turn pydantic validation errors into stackbuild's ``file:line: field.path: problem (fix)``.

Shared by the profile loader and the knowledge-base loader so both speak the same way.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import Problem
from .source import PathKey, YamlSource

# Text that ends up in a Dockerfile comment or label: one line, printable, no control characters.
ONE_LINE = re.compile(r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*\Z")  # no C0/C1 controls, no line separators


class Strict(BaseModel):
    """Base of every raw file model: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @classmethod
    def field_names(cls) -> set[str]:
        """The keys the model takes (what an unknown-field error lists)."""
        return set(cls.model_fields)


def dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _yaml_hint(value: Any) -> str:
    if isinstance(value, float):
        return f"YAML read this as the number {value!r}; quote it"
    if isinstance(value, bool):
        return "YAML read this as a boolean; quote it"
    if isinstance(value, int):
        return "YAML read this as a number; quote it"
    return ""


def problems_from_validation(
    exc: ValidationError, source: YamlSource, prefix: PathKey, model: type[BaseModel]
) -> list[Problem]:
    """One Problem per pydantic error, located in the YAML file."""
    problems: list[Problem] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"]
                    if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))
        path = (*prefix, *loc)
        kind = err["type"]
        value = err.get("input")
        fix = ""
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = sorted(parent.field_names() if issubclass(parent, Strict) else parent.model_fields) if parent else []
            message = "unknown field"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                fix = f"did you mean '{close[0]}'? allowed: {', '.join(allowed)}"
            else:
                fix = f"allowed: {', '.join(allowed)}"
        elif kind == "missing":
            message = "required field is missing"
            fix = f"add '{loc[-1]}'"
        elif kind == "string_type":
            message = f"expected a string, got {type(value).__name__} {value!r}"
            fix = _yaml_hint(value) or "write it as a quoted string"
        elif kind in ("list_type", "dict_type", "model_type"):
            wanted = {"list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping"}[kind]
            message = f"expected {wanted}, got {type(value).__name__}"
            fix = f"write it as {wanted}"
        elif kind == "literal_error":
            message = f"{value!r} is not allowed"
            fix = err["msg"].replace("Input should be ", "use ")
        elif kind == "value_error":
            text = str(err.get("ctx", {}).get("error", err["msg"]))
            message, _, fix = text.partition(" || ")
        else:
            message = err["msg"][0].lower() + err["msg"][1:]
            hint = _yaml_hint(value)
            fix = hint
        problems.append(Problem(source.file, source.line_of(path), dotted(path), message, fix))
    return problems


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The nested model class reached by ``loc`` (skipping list indexes and dict keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = _inner_model(current.model_fields[part].annotation)
        # a dict key (release name, file name) keeps the value model
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside list[...], dict[str, ...] or Optional[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
