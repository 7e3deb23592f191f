"""What a name may look like: stacks, options, releases, known issues, variables. One rule each."""

from __future__ import annotations

import re

from ..errors import StackbuildError
from ..safety.printable import printable

# Every rule matches the whole string: "\Z", never "$", which also accepts a final newline (and a
# newline is how a value would smuggle an instruction into a Dockerfile).
# Stack, option and known-issue names: lowercase words joined by '-'.
KEBAB_TEXT = r"[a-z0-9]+(?:-[a-z0-9]+)*"
RELEASE_TEXT = r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}"
KEBAB = re.compile(rf"^{KEBAB_TEXT}\Z")
RELEASE = re.compile(rf"^{RELEASE_TEXT}\Z")
# Environment variables and build arguments.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_assignments(pairs: list[str], error: type[StackbuildError], message: str) -> dict[str, str]:
    """``NAME=VALUE`` pairs (the value may hold '='); ``message`` (formatted with the pair) when one is not."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not IDENTIFIER.match(name):
            raise error(message.format(printable(pair)))
        out[name] = value
    return out
