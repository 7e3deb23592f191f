"""Streaming log scan for doctor: memory independent of the log's size, linear in it.

A log arrives as bytes (a file, standard input, a build's output). ``decode_blocks`` picks the
encoding from the first bytes (a UTF-8 or UTF-16 byte-order mark, or UTF-16 without one, told by
its NUL bytes), refuses other binary data, and decodes incrementally. ``line_chunks`` cuts the
text into chunks of whole lines (a line longer than a chunk is cut, without counting a line).
``clean`` strips every terminal control sequence (7- and 8-bit CSI such as colours, OSC title and
clipboard sequences, ``ESC c``, DCS/APC strings) and every other control character except tab,
carriage return and newline; CRLF becomes LF. A lone carriage return (a progress bar overwritten
by ``Killed``) separates *segments* of a line: a pattern is tried on the line and then on each
segment, while line numbers count LF only, as an editor does.

``LogScanner`` feeds chunk after chunk through each knowledge-base pattern (a ``str.find`` of the
pattern's fixed text, then the regex on at most ``MAX_LINE_CHARS`` around it, once per line) and
keeps, per issue, only what a diagnosis reports: the first 20 lines, which patterns matched, and
the hits still waiting for a context line within the window. Excerpts are read in a second pass
over the same source, for the few lines that need one.
"""

from __future__ import annotations

import codecs
import heapq
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..profile.knowledge import KnownIssue, LogPattern
from ..safety.printable import printable_lines
from ..safety.credentials import redact

CHUNK_CHARS = 4 * 1024 * 1024     # text handled at once
READ_BYTES = 1024 * 1024          # bytes read at once
MAX_LINE_CHARS = 4096             # a pattern sees at most this much of one (very long) line
MAX_LINES_REPORTED = 20
EXCERPT_BEFORE, EXCERPT_AFTER = 2, 2
EXCERPT_LINE_CHARS = 300
BINARY_SNIFF = 65536

# Terminal control sequences, 7-bit (ESC ...) and 8-bit (C1 controls).
_SEQUENCES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"                                 # CSI: colours, cursor moves
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"           # OSC: title, clipboard, links
    r"|(?:\x1b[P_^X]|[\x90\x98\x9e\x9f])[^\x1b\x9c\n]*(?:\x1b\\|\x9c)?"  # DCS, APC, PM, SOS strings
    r"|\x1b[ -/]*[0-~]?"                                                # ESC c, ESC ( B, ESC =, a lone ESC
)
# What follows an ESC in a 7-bit sequence (the fast path splits the text at each ESC).
_AFTER_ESC = re.compile(r"\[[0-?]*[ -/]*[@-~]?|\][^\x07\x9c\n]*\x07?|[P_^X][^\x9c\n]*|[ -/]*[0-~]?")
_C0 = tuple(chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))
_C1 = tuple(chr(c) for c in range(0x80, 0xA0))


class UnreadableLog(Exception):
    """The log is binary (NUL bytes in a log that is not UTF-16); the message says so."""


def clean(text: str) -> str:
    """``text`` without control sequences or control characters (tab, CR and LF kept), CRLF as LF.

    Written for speed on clean text: each test is a plain substring search, and the regexes run
    only where there is an escape character.
    """
    if "\x1b" in text:
        pieces = text.split("\x1b")
        text = pieces[0] + "".join(piece[_AFTER_ESC.match(piece).end():] for piece in pieces[1:])  # type: ignore[union-attr]
    controls = _C0
    if not text.isascii():
        if any(c in text for c in _C1):
            text = _SEQUENCES.sub("", text)
        controls = _C0 + _C1
    for control in controls:
        if control in text:
            text = text.replace(control, "")
    return text.replace("\r\n", "\n")


def sniff_encoding(head: bytes) -> str:
    """The encoding of a log from its first bytes; UnreadableLog for binary data."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:BINARY_SNIFF]
    if b"\x00" in sample:
        encoding = _utf16_without_bom(sample)
        if encoding is None:
            raise UnreadableLog("looks binary (it contains NUL bytes)")
        return encoding
    return "utf-8"


def _utf16_without_bom(sample: bytes) -> str | None:
    """utf-16-le or utf-16-be when ``sample`` reads as text in that byte order, else None.

    Any script counts (Cyrillic, CJK, emoji: their code units have no NUL byte): each byte order
    must decode without error to mostly printable text, and the one whose text has more ASCII
    (line feeds, spaces, digits, which every log has) wins: read in the wrong order, ASCII
    becomes U+0A00, U+2000, U+3100 and the like.
    """
    sample = sample[:len(sample) - len(sample) % 2]
    best, best_score = None, -1
    for encoding in ("utf-16-le", "utf-16-be"):
        units = sample
        last = units[-2:] if encoding == "utf-16-le" else units[-2:][::-1]
        if len(last) == 2 and 0xD8 <= last[1] <= 0xDB:  # a surrogate pair cut at the sample's end
            units = units[:-2]
        try:
            text = units.decode(encoding)
        except UnicodeDecodeError:
            continue
        if not text:
            continue
        visible = sum(1 for c in text if c.isprintable() or c in "\t\r\n\x1b")
        ascii_text = sum(1 for c in text if " " <= c <= "~" or c in "\t\r\n")
        if visible >= 0.9 * len(text) and ascii_text > best_score:
            best, best_score = encoding, ascii_text
    return best if best_score > 0 else None


def decode_blocks(blocks: Iterable[bytes]) -> Iterator[str]:
    """Decoded text of a stream of byte blocks (encoding sniffed from the first 64 KiB)."""
    iterator = iter(blocks)
    head = b""
    for block in iterator:
        head += block
        if len(head) >= BINARY_SNIFF:
            break
    decoder = codecs.getincrementaldecoder(sniff_encoding(head))(errors="replace")
    if head:
        yield decoder.decode(head)
    for block in iterator:
        yield decoder.decode(block)
    yield decoder.decode(b"", final=True)


def line_chunks(texts: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[str]:
    """Chunks of whole lines (each ends with LF but the last); a line longer than ``size`` is cut."""
    carry = ""
    for text in texts:
        carry += text
        while len(carry) >= size:
            cut = carry.rfind("\n", 0, size) + 1 or size
            yield carry[:cut]
            carry = carry[cut:]
    if carry:
        yield carry


@dataclass
class _Issue:
    """What one issue's diagnosis needs, kept while the log streams past."""

    issue: KnownIssue
    lines: list[int] = field(default_factory=list)
    matched: set[int] = field(default_factory=set)
    pending: list[tuple[int, frozenset[int]]] = field(default_factory=list)
    last_context: int | None = None

    def keep(self, line: int, patterns: frozenset[int]) -> None:
        if self.lines and self.lines[-1] == line:  # a line longer than a chunk, hit in two chunks
            self.matched |= patterns
            return
        if len(self.lines) < MAX_LINES_REPORTED:
            self.lines.append(line)
        self.matched |= patterns

    def hit(self, line: int, patterns: frozenset[int]) -> None:
        window = self.issue.context_window
        if not self.issue.context or (self.last_context is not None and line - self.last_context <= window):
            self.keep(line, patterns)
            return
        self.pending = [(h, p) for h, p in self.pending if h >= line - window]
        self.pending.append((line, patterns))

    def saturated(self) -> bool:
        """Nothing more in the log can change this issue's diagnosis: its lines and patterns are complete."""
        return len(self.lines) >= MAX_LINES_REPORTED and len(self.matched) == len(self.issue.patterns)

    def event(self, line: int, kind: int, patterns: frozenset[int]) -> None:
        if kind:
            self.hit(line, patterns)
        else:
            self.context(line)

    def context(self, line: int) -> None:
        for hit, patterns in self.pending:
            if hit >= line - self.issue.context_window:
                self.keep(hit, patterns)
        self.pending = []
        self.last_context = line


def _segment_match(pattern: LogPattern, text: str, lo: int, hi: int) -> bool:
    if not all(text.find(literal, lo, hi) >= 0 for literal in pattern.literals):
        return False  # cheap, and what keeps a line of near-misses from reaching the regex
    if pattern.regex.search(text, lo, hi):
        return True
    if text.find("\r", lo, hi) < 0:
        return False
    return any(pattern.regex.search(segment) for segment in text[lo:hi].split("\r"))


def line_starts(text: str, pattern: LogPattern) -> Iterator[int]:
    """Start offsets of the lines of ``text`` this pattern matches, in order, each line once (lazily).

    Linear: each line's bounds are found once, a line that fails is skipped whole, and a line
    longer than MAX_LINE_CHARS is cut into tiles of half that; an occurrence of the fixed text in
    one tile is tried in that tile and its two neighbours (so a match of up to half MAX_LINE_CHARS
    around it is found), and the next occurrence looked for in the tile after: each tile is read
    at most three times.
    """
    literal = pattern.literal
    half = MAX_LINE_CHARS // 2
    pos = text.find(literal)
    start = end = -1
    while pos >= 0:
        if pos >= end:
            start = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
        if end - start <= MAX_LINE_CHARS:
            if _segment_match(pattern, text, start, end):
                yield start
            pos = text.find(literal, end)
            continue
        tile = (pos - start) // half  # the windows: tiles tile-1..tile+1 for an occurrence in tile
        lo = start + max(0, tile - 1) * half
        hi = min(end, start + (tile + 2) * half)
        if _segment_match(pattern, text, lo, hi):
            yield start
            pos = text.find(literal, end)
        else:
            pos = text.find(literal, max(pos + 1, start + (tile + 1) * half))


def _line_numbers(text: str, offsets: Iterable[int], base: int) -> Iterator[int]:
    """1-based line numbers of sorted offsets in a chunk whose first line is ``base + 1`` (lazily)."""
    line, previous = base + 1, 0
    for offset in offsets:
        line += text.count("\n", previous, offset)
        previous = offset
        yield line


class LogScanner:
    """Known issues in a log fed chunk by chunk (``feed``), then ``results``.

    Hits stream from the patterns' searches into each issue's state, merged in line order (a
    context line before a hit on the same line), so nothing per matching line is ever held: a log
    of millions of matching lines needs no more memory than a clean one. An issue that already
    has its MAX_LINES_REPORTED lines and every pattern matched is not searched again.
    """

    def __init__(self, issues: Iterable[KnownIssue]):
        self._issues = [_Issue(issue) for issue in issues if issue.patterns]
        self._base = 0  # lines before the current chunk

    def feed(self, raw_chunk: str) -> None:
        text = clean(raw_chunk)
        for state in self._issues:
            if state.saturated():
                continue
            streams = [self._stream(text, pattern, 1, index, state) for index, pattern in enumerate(state.issue.patterns)]
            streams += [self._stream(text, pattern, 0, -1, state) for pattern in state.issue.context]
            current: tuple[int, int] | None = None  # the (line, kind) being gathered
            patterns: set[int] = set()
            for line, kind, index in heapq.merge(*streams):
                if (line, kind) != current:
                    if current is not None:
                        state.event(*current, frozenset(patterns))
                    current, patterns = (line, kind), set()
                if index >= 0:
                    patterns.add(index)
            if current is not None:
                state.event(*current, frozenset(patterns))
        self._base += text.count("\n")

    def _stream(self, text: str, pattern: LogPattern, kind: int, index: int,
                state: _Issue) -> Iterator[tuple[int, int, int]]:
        """(line, kind, pattern index) of each line ``pattern`` matches, until its hits can change nothing."""
        for line in _line_numbers(text, line_starts(text, pattern), self._base):
            yield line, kind, index
            if state.saturated() or (index >= 0 and index in state.matched
                                     and len(state.lines) >= MAX_LINES_REPORTED):
                return

    def results(self) -> list[tuple[KnownIssue, tuple[int, ...], tuple[LogPattern, ...]]]:
        """(issue, its first MAX_LINES_REPORTED matching lines, the patterns that matched) per issue found."""
        out = []
        for state in self._issues:
            if state.lines:
                patterns = tuple(p for i, p in enumerate(state.issue.patterns) if i in state.matched)
                out.append((state.issue, tuple(state.lines), patterns))
        return out


def excerpts(chunks: Iterable[str], lines: set[int]) -> dict[int, str]:
    """The cleaned text of each wanted line (1-based), credentials masked, cut at EXCERPT_LINE_CHARS, control
    characters escaped.

    Lines are found in the raw chunks (cleaning never removes a line feed) and only they are cleaned.
    """
    wanted = sorted(lines)
    raw_cap = 4 * EXCERPT_LINE_CHARS  # enough raw text for the cut, escape sequences and all
    pieces: dict[int, str] = {}
    base = 0
    for text in chunks:
        if not wanted:
            break
        count = text.count("\n")
        last = base + count + 1  # the chunk's last (maybe partial) line
        position, line = 0, base + 1
        for number in [n for n in wanted if base < n <= last]:
            while line < number:
                position = text.find("\n", position) + 1
                line += 1
            stop = text.find("\n", position)
            stop = len(text) if stop < 0 else stop
            piece = pieces.get(number, "")
            if len(piece) <= raw_cap:
                pieces[number] = piece + text[position:min(stop, position + raw_cap + 1)]
        wanted = [n for n in wanted if n >= last]
        base += count
    out = {}
    for number, piece in pieces.items():
        piece = redact(clean(piece).rstrip("\r"))  # masked before the cut, which could hide a credential's shape
        if len(piece) > EXCERPT_LINE_CHARS:
            piece = piece[:EXCERPT_LINE_CHARS - 3] + "..."
        out[number] = printable_lines(piece)
    return out


def count_lines(chunks: Iterable[str]) -> int:
    """The number of lines (LF-terminated, plus a last unterminated one) of a chunked text."""
    total, last = 0, ""
    for chunk in chunks:
        total += chunk.count("\n")
        last = chunk
    return total + (1 if last and not last.endswith("\n") else 0)


ChunkSource = Callable[[], Iterator[str]]
