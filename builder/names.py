"""What a name may look like: stacks, options, releases, known issues, variables. One rule each."""

from __future__ import annotations

import re

from .errors import StackbuildError

# Stack, option and known-issue names: lowercase words joined by '-'.
KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
RELEASE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
# Environment variables and build arguments.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_assignments(pairs: list[str], error: type[StackbuildError], message: str) -> dict[str, str]:
    """``NAME=VALUE`` pairs (the value may hold '='); ``message`` (formatted with the pair) when one is not."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not IDENTIFIER.match(name):
            raise error(message.format(pair))
        out[name] = value
    return out
