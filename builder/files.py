"""Writing files so that a failure leaves nothing half-written: one file, or one whole folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import StackbuildError


def write_atomic(path: Path, text: str, error: type[StackbuildError], *, make_folder: bool = False) -> None:
    """Write ``text`` through a temporary file in the same folder, then rename it into place.

    ``error`` is the class raised (with "cannot write PATH: why"); ``make_folder`` creates a missing
    folder, else a missing folder is an error.
    """
    folder = path.parent if str(path.parent) else Path(".")
    if make_folder:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error(f"cannot write {path}: {exc.strerror}") from None
    if not folder.is_dir():
        raise error(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise error(f"cannot write {path}: it is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise error(f"cannot write {path}: {exc.strerror}") from None


def write_folder_atomic(folder: Path, fill: Callable[[Path], None], error: type[StackbuildError]) -> None:
    """Fill a staging folder beside ``folder`` with ``fill``, then rename it to ``folder`` (new or empty)."""
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        raise error(f"cannot write {folder}: folder {parent} does not exist")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    except OSError as exc:
        raise error(f"cannot write {folder}: {exc.strerror}") from None
    try:
        fill(staging)
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise error(f"cannot write {folder}: {exc.strerror}") from None
