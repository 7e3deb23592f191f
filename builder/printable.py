"""Text from files and users, made safe to print: control characters shown as escapes, never sent.

A YAML key, a path or a log line can hold terminal control sequences (a colour, a title or
clipboard OSC, ``ESC c`` that resets the terminal) or line breaks that fake another line of
output or of a Dockerfile comment. ``printable`` keeps such text on one line and inert.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The same, sparing newline and tab: for multi-line messages.
_CONTROL_KEEP_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` on one line with every control character written as an escape (``\\x1b``, ``\\n``)."""
    return _CONTROL.sub(_escape, text)


def printable_lines(text: str) -> str:
    """``text`` with its newlines and tabs kept and every other control character escaped."""
    return _CONTROL_KEEP_LINES.sub(_escape, text)
