"""Credentials out of everything stackbuild prints: settings, errors, a tool's output.

Package indexes and mirrors may carry credentials, and people write them every way pip accepts
and some it does not: ``https://user:TOKEN@host/simple``, ``https://TOKEN@host``, without a scheme
(``user:TOKEN@host/simple``), with one slash (``https:/user:TOKEN@host``), or as a query
parameter (``?token=…``, ``&access_token=…``). ``redact`` masks each of them in any text; it is
pure text work (no URL parsing that a malformed port could make fail).
"""

from __future__ import annotations

import re

MASK = "***"

# userinfo before '@' in something URL-shaped: after a scheme (with one or two slashes, or none)
# or at the start of a word. The password (after ':') is masked; a user without a password is a
# token (GitHub, Artifactory style) and masked whole when a scheme says it is a URL.
_USER_PASSWORD = re.compile(
    r"(?P<lead>(?:\b[A-Za-z][A-Za-z0-9+.-]*:/{0,2})|(?<![\w.:/@-]))"
    r"(?P<user>[^\s:/@?#'\"]+):(?P<secret>[^\s/@?#'\"]+)@(?!sha(?:256|384|512):)(?=[A-Za-z0-9\[])"
)
_TOKEN_ONLY = re.compile(r"(?P<lead>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,2})(?P<secret>[^\s:/@?#'\"]+)@"
                         r"(?!sha(?:256|384|512):)(?=[A-Za-z0-9\[])")
_QUERY = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*(?:token|key|secret|password|passwd|pwd|auth|sig|signature|credential)"
    r"[A-Za-z0-9_.-]*))=(?P<secret>[^&#\s'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every URL credential it holds replaced by ``***``."""
    if "@" in text:
        text = _USER_PASSWORD.sub(lambda m: f"{m['lead']}{m['user']}:{MASK}@", text)
        text = _TOKEN_ONLY.sub(lambda m: f"{m['lead']}{MASK}@" if m["secret"] != MASK else m[0], text)
    if "=" in text:
        text = _QUERY.sub(lambda m: f"{m['key']}={MASK}", text)
    return text
