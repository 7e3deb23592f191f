"""Writing files so that a failure leaves nothing half-written: one file, or one whole folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# no import of builder.errors: safety sits below it (pyproject.toml's layers); any exception class will do
from .printable import printable
from .files import InputRefused, umask, write_output


def write_atomic(path: Path | str, text: str, error: type[Exception], *, make_folder: bool = False) -> None:
    """Write ``text`` through a temporary file in the same folder, then rename it into place.

    Only a regular file is ever written or replaced, with the umask's mode: a directory, a trailing
    '/', a symlink, a FIFO or a device at ``path`` is refused. ``error`` is the class raised
    (with "cannot write PATH: why"); ``make_folder`` creates a missing folder, else a missing
    folder is an error. Pass the path as the user wrote it (``Path`` drops a trailing '/').
    """
    shown = printable(str(path))
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    if make_folder:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error(f"cannot write {shown}: {exc.strerror}") from None
    if not folder.is_dir():
        raise error(f"cannot write {shown}: folder {printable(str(folder))} does not exist")
    if Path(path).is_dir():
        raise error(f"cannot write {shown}: it is a folder")
    try:
        write_output(path, text.encode("utf-8"))
    except InputRefused as exc:
        raise error(f"cannot write {shown}: {exc}") from None
    except OSError as exc:
        raise error(f"cannot write {shown}: {exc.strerror or exc}") from None


def write_folder_atomic(folder: Path, fill: Callable[[Path], None], error: type[Exception]) -> None:
    """Fill ``folder`` (new, or existing and empty) with ``fill``, all or nothing.

    A new folder is filled as a staging folder beside it, then renamed into place, with the umask's
    mode. An existing empty folder is kept as it is (its mode and owner are its owner's choice; it
    may be a mount point, or the working folder '.', neither of which can be replaced): the staging
    folder is made inside it, and its entries are moved up; a failure empties it again.
    """
    shown = printable(str(folder))
    if os.path.lexists(folder):
        _fill_existing(folder, fill, error)
        return
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        raise error(f"cannot write {shown}: folder {printable(str(parent))} does not exist")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    except OSError as exc:
        raise error(f"cannot write {shown}: {exc.strerror}") from None
    try:
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes it 0700; the folder gets the umask's mode
        fill(staging)
        staging.rename(folder)
    except BaseException as exc:  # Ctrl-C and SIGTERM too: no staging folder is left behind
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise error(f"cannot write {shown}: {exc.strerror}") from None
        raise


def _fill_existing(folder: Path, fill: Callable[[Path], None], error: type[Exception]) -> None:
    shown = printable(str(folder))
    try:
        staging = Path(tempfile.mkdtemp(prefix=".stackbuild-staging.", dir=folder))
    except OSError as exc:
        raise error(f"cannot write {shown}: {exc.strerror}") from None
    try:
        fill(staging)
        for entry in sorted(os.listdir(staging)):
            os.rename(staging / entry, folder / entry)
        staging.rmdir()
    except BaseException as exc:
        for entry in os.listdir(folder):  # it was empty: what is there now is this write's
            path = folder / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise error(f"cannot write {shown}: {exc.strerror}") from None
        raise
