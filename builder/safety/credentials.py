"""Credentials out of everything stackbuild prints: settings, errors, a tool's output, doctor's excerpts.

Package indexes and mirrors may carry credentials, and people write them every way pip accepts
and some it does not: ``https://user:TOKEN@host/simple``, ``https://TOKEN@host``, an empty user
or password (``https://:TOKEN@host``, ``https://TOKEN:@host``), a password or user holding ``@``
(``https://user:p@ss@host``, ``https://us@er:TOKEN@host``), without a scheme
(``user:TOKEN@host/simple``), with one slash (``https:/user:TOKEN@host``), or as a query or
fragment parameter whose name looks secret (``?token=…``, ``&access_token=…``, ``?bearer=…``,
``#jwt=…``, ``?X-Amz-Signature=…``). ``redact`` is the one masker for all of them, in any text;
it is pure text work (no URL parsing that a malformed port could make fail).

How an authority is read: it runs from the scheme (or the start of a word) to the first ``/`` or
white space, and its user information is everything before its *last* ``@`` - as pip and
urllib read it. A ``/`` in a password ends the authority for them too (write it ``%2F``).
"""

from __future__ import annotations

import re

MASK = "***"

# user information before the last '@' of an authority: after a scheme with one or two slashes, or
# at the start of a word (``user:TOKEN@host``, ``https:user:TOKEN@host``: everything after the
# first ':' is masked). '@sha256:' is an image digest.
_USERINFO = re.compile(
    r"(?P<lead>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,2}|(?<![^\s'\"=(<\[,;|`]))"
    r"(?P<userinfo>[^\s/\"<>`\\]*)@(?!sha(?:256|384|512):)(?=[A-Za-z0-9\[])"
)
# query and fragment parameters by any name that looks secret
SECRET_NAMES = ("token", "bearer", "jwt", "key", "secret", "passw", "pwd", "pass", "auth", "sig", "credential",
                "session", "cookie", "otp", "sas", "private")
_PARAMETER = re.compile(
    r"(?P<key>[?&;#](?:[A-Za-z0-9_.\[\]-]*(?:" + "|".join(SECRET_NAMES) + r")[A-Za-z0-9_.\[\]-]*))"
    r"=(?P<secret>[^&#\s'\"<>`]+)",
    re.IGNORECASE,
)
# HTTP authorisation as tools print it in verbose output
_HEADER = re.compile(r"(?P<key>\b(?:proxy-)?authorization\s*[:=]\s*(?:(?:bearer|basic|token|digest)\s+)?)"
                     r"(?P<secret>[^\s'\",]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<key>\bbearer\s+)(?P<secret>[A-Za-z0-9._~+/-]{12,}=*)", re.IGNORECASE)


def _userinfo(match: re.Match[str]) -> str:
    lead, info = match["lead"], match["userinfo"]
    if not info:
        return match[0]
    user, colon, password = info.partition(":")
    if not lead and not colon:
        return match[0]  # a word with '@' (user@host, pkg@1.0): no credential in it
    if colon and password and password != MASK:
        return f"{lead}{user}:{MASK}@"
    if colon and not password and user and user != MASK:
        return f"{lead}{MASK}:@"  # a token written as the user with an empty password
    if not colon and info != MASK:
        return f"{lead}{MASK}@"  # a token alone (GitHub, Artifactory style)
    return match[0]


def redact(text: str) -> str:
    """``text`` with every URL credential it holds replaced by ``***``."""
    if "@" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _PARAMETER.sub(lambda m: f"{m['key']}={MASK}", text)
    lowered = text.lower()
    if "authorization" in lowered:
        text = _HEADER.sub(lambda m: f"{m['key']}{MASK}", text)
    if "bearer" in lowered:
        text = _BEARER.sub(lambda m: f"{m['key']}{MASK}", text)
    return text
