"""Reading what users hand us, and writing what they ask for, without surprises.

Reads are bounded and of regular files only: a FIFO would block forever, ``/dev/zero`` would fill
memory, a directory or a symlink loop would end in an unexplained OSError. ``read_bytes`` opens
without blocking, checks what it opened, and reads at most ``limit`` bytes; anything else is an
``InputRefused`` (an ``OSError``, so callers' existing handlers report it with their own exit code).

Writes (``write_output``) go to a temporary file beside the target and are renamed over it, with
the mode a plain ``open()`` would give (the umask honoured), and only over a regular file: a
device, FIFO, socket, directory or symlink at the output path is refused, never replaced.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

# Sane upper bounds: the largest shipped profile is ~20 KiB, the knowledge base ~150 KiB.
MAX_PROFILE_BYTES = 256 * KIB
MAX_KNOWLEDGE_BYTES = 2 * MIB
MAX_CONFIG_BYTES = 1 * MIB
MAX_CA_BUNDLE_BYTES = 16 * MIB
MAX_LOCK_BYTES = 16 * MIB
MAX_JSON_BYTES = 64 * MIB  # a model folder's config.json, tokenizer config or shard index


class InputRefused(OSError):
    """A file that is not a regular file, is too large, or cannot be opened; ``strerror`` says which."""

    def __init__(self, message: str):
        super().__init__(errno.EINVAL, message)

    def __str__(self) -> str:
        return self.strerror or ""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link loop"
    if exc.errno == errno.ENAMETOOLONG:
        return "its name is too long"
    return exc.strerror or str(exc)


def open_regular(path: Path | str) -> int:
    """A read-only descriptor of ``path``, refused (InputRefused) unless it is a regular file.

    Opened with O_NONBLOCK so a FIFO without a writer cannot block; FileNotFoundError passes
    through unchanged, so callers can still say "not found" their own way.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise InputRefused("it is a directory, not a file") from None
        raise InputRefused(_describe_os_error(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputRefused(f"it is {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path | str, limit: int) -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes (InputRefused otherwise)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise InputRefused(_describe_os_error(exc)) from None
    if len(data) > limit:
        raise InputRefused(f"it is larger than {_size(limit)}, more than such a file can sensibly hold")
    return data


def read_text(path: Path | str, limit: int) -> str:
    """``read_bytes`` decoded as UTF-8 (UnicodeDecodeError passes through, as from Path.read_text)."""
    return read_bytes(path, limit).decode("utf-8")


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB else f"{limit // KIB} KiB"


def check_output_path(path: Path | str) -> None:
    """Refuse (InputRefused) an output path that names a directory or anything but a regular file.

    Pass the path as the user wrote it: ``Path`` drops a trailing '/'.
    """
    text = str(path)
    if text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        raise InputRefused("the path ends with '/', which names a directory, not a file")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputRefused(_describe_os_error(exc)) from None
    if stat.S_ISLNK(mode):
        raise InputRefused("it is a symbolic link; name the file itself")
    if not stat.S_ISREG(mode):
        raise InputRefused(f"it is {_kind(mode)}, not a regular file")


def umask() -> int:
    """The process umask (read without changing it for longer than this call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_output(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, as a regular file with the umask's mode.

    Refuses (InputRefused) what ``check_output_path`` refuses; other failures are OSError. The
    temporary file is removed whatever happens.
    """
    check_output_path(path)
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name[:64]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~umask())
        check_output_path(path)  # a special file created meanwhile is still not replaced
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
