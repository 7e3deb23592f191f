"""Image references and registries as the engine reads them: checked before any engine call."""

from __future__ import annotations

import re

from ..errors import UsageError
from ..safety.printable import printable

# An image reference as the engine reads it (distribution/reference's grammar):
# [HOST[:PORT]/]PATH[:TAG][@DIGEST], or an image id. Checked before any engine call, so that nothing
# else (a '../', a '?', a space) reaches the engine's API in a URL path.
_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-f]{32,}"
IMAGE_REFERENCE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_PART}(?:/{_PATH_PART})*)"
    rf"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?(?:@(?P<digest>{_DIGEST}))?\Z")
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}\Z")
IMAGE_RULE = ("[HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST]: a lowercase name of words joined by '/', '.', '_' or '-', "
              "a tag of letters, digits, '_', '.' and '-', a port from 1 to 65535")

# Where prebuilt images live: HOST[:PORT][/PATH], the leading part of an image reference.
REGISTRY = re.compile(rf"^{_DOMAIN}(?:/{_PATH_PART})*\Z")


def registry_problem(value: str) -> str | None:
    """What is wrong with a registry setting (HOST[:PORT][/PATH]), or None."""
    found = REGISTRY.match(value)
    if not found:
        return "is not HOST[:PORT][/PATH] (e.g. localhost:5000/stackbuild or ghcr.io/org)"
    if found["port"] is not None and not 1 <= int(found["port"]) <= 65535:
        return f"has an invalid port {found['port']} (a number from 1 to 65535)"
    return None


def image_ref_problem(ref: str, *, tag: bool = False, digest: bool = True) -> str | None:
    """What is wrong with an image reference, or None. ``tag``: one is required; ``digest``: one is allowed."""
    if IMAGE_ID.match(ref) and digest:
        return None
    found = IMAGE_REFERENCE.match(ref)
    if not found or len(found["name"]) > 255:
        return f"is not an image reference ({IMAGE_RULE})"
    if found["port"] is not None and not 1 <= int(found["port"]) <= 65535:
        return f"has an invalid port {found['port']} (a number from 1 to 65535)"
    if found["digest"] and not digest:
        return "names a digest: give NAME:TAG"
    if tag and not found["tag"]:
        return "has no tag (NAME:TAG, e.g. localhost:5000/qlora:cache)"
    return None

def checked_ref(ref: str) -> str:
    """``ref`` when it is an image reference; UsageError otherwise, before any engine call (a '../'
    in a reference would reach another of the engine's API endpoints)."""
    problem = image_ref_problem(ref)
    if problem:
        raise UsageError(f"'{printable(ref)}' {problem}")
    return ref
