"""What a user names on the command line: a stack (``STACK[@RELEASE]`` or a profile path), an
image reference, or a lock file. One place decides which it is."""

from __future__ import annotations

from ..errors import SelectionError
from ..safety.printable import printable
from .names import RELEASE


def split_spec(spec: str) -> tuple[str, str | None]:
    """'qlora@2023.07' -> ('qlora', '2023.07'); 'qlora' -> ('qlora', None)."""
    name, sep, release = spec.rpartition("@")
    if not sep:
        return spec, None
    if not name or not RELEASE.match(release):
        raise SelectionError(f"'{printable(spec)}' is not STACK or STACK@RELEASE")
    return name, release


def is_profile_path(spec: str) -> bool:
    """A path to a profile file rather than a shipped stack's name."""
    return spec.endswith((".yaml", ".yml")) or "/" in spec


def looks_like_image(spec: str) -> bool:
    """REPO:TAG (or HOST:PORT/REPO:TAG) rather than STACK[@RELEASE] or a profile path."""
    return ":" in spec and "@" not in spec.split(":")[0] and not spec.endswith((".yaml", ".yml"))


def is_lock_file(spec: str) -> bool:
    return spec.endswith(".txt")
