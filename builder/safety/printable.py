"""Text from files and users, made safe to print: control and invisible characters shown as escapes.

A YAML key, a path, an image label or a log line can hold terminal control sequences (a colour, a
title or clipboard OSC, ``ESC c`` that resets the terminal), line breaks that fake another line of
output or of a Dockerfile comment, or invisible characters: bidi overrides and isolates (U+202A-
U+202E, U+2066-U+2069) that show text in another order than it is read or run, zero-width
characters (U+200B-U+200F, U+2060-U+2064, U+FEFF), and tag characters (U+E0000-U+E007F) that hide
text. ``printable`` keeps such text on one line and inert: every one of them written as an escape
(``\\x1b``, ``\\u202e``), never sent.
"""

from __future__ import annotations

import re

# Invisible format characters: bidi marks, embeddings, overrides and isolates, zero-width
# characters, the byte-order mark, interlinear annotations and tag characters.
INVISIBLE = "\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f"
# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the invisible ones.
_CONTROL = re.compile(rf"[\x00-\x1f\x7f-\x9f\u2028\u2029{INVISIBLE}]")
# The same, sparing newline and tab: for multi-line messages.
_CONTROL_KEEP_LINES = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{INVISIBLE}]")
_INVISIBLE = re.compile(rf"[{INVISIBLE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` on one line with every control or invisible character written as an escape (``\\x1b``, ``\\n``)."""
    return _CONTROL.sub(_escape, text)


def printable_lines(text: str) -> str:
    """``text`` with its newlines and tabs kept and every other control or invisible character escaped."""
    return _CONTROL_KEEP_LINES.sub(_escape, text)


def visible(text: str) -> str:
    """``text`` with only its invisible characters (bidi, zero-width, tags) escaped; controls untouched."""
    return _INVISIBLE.sub(_escape, text)
