"""What doctor --model reads from a model folder: JSON files and weight-shard headers, defensively.

A model folder comes from a download that may have failed half-way, a Git LFS checkout without
LFS, or someone's upload. ``json_file`` tells a missing file from a corrupt one (not JSON, too
large, nested too deeply, not a regular file); ``shard_problem`` reads a weight file's first bytes
and says why it cannot be a shard: a safetensors file must start with an 8-byte header length and
that many bytes of a JSON object whose tensors fit in the file; a torch file is a zip archive
(``torch.save`` since 1.6) or a pickle (older ``torch.save``). Nothing is loaded or unpickled.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ..safety.files import MAX_JSON_BYTES, open_regular, read_text

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit
ZIP_MAGIC = b"PK\x03\x04"


def json_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object, None), (None, None) when the file does not exist, or (None, what is wrong)."""
    if not path.exists() and not path.is_symlink():
        return None, None
    try:
        data = json.loads(read_text(path, MAX_JSON_BYTES))
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except RecursionError:
        return None, "is nested too deeply"
    except ValueError as exc:
        return None, f"is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, not an object"
    return data, None


def _read_head(path: Path, size: int) -> bytes:
    import os

    fd = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(size)


def shard_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a weight shard, or None when its header looks right."""
    try:
        size = path.stat().st_size
        if path.name.endswith(".safetensors"):
            return _safetensors_problem(path, size)
        head = _read_head(path, 2)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if head.startswith(ZIP_MAGIC[:2]):
        return None if _read_head(path, 4) == ZIP_MAGIC else "is not a torch zip archive"
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return None  # a pickle (torch.save before 1.6)
    return "is neither a torch zip archive nor a pickle (a truncated or wrong download?)"


def _safetensors_problem(path: Path, size: int) -> str | None:
    if size < 8:
        return f"is {size} bytes, too short for a safetensors header"
    (length,) = struct.unpack("<Q", _read_head(path, 8))
    if length == 0 or length > MAX_SAFETENSORS_HEADER or 8 + length > size:
        return f"has no valid safetensors header (header length {length} for a {size}-byte file)"
    raw = _read_head(path, 8 + length)[8:]
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "has a safetensors header that is not JSON"
    if not isinstance(header, dict):
        return "has a safetensors header that is not a JSON object"
    data_size = size - 8 - length
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_size):
            return f"has a safetensors header whose tensors do not fit the file (truncated?)"
    return None
