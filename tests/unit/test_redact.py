"""Credentials are masked wherever a URL or setting is printed (issue 13, item 5)."""

from __future__ import annotations

import json

import pytest

from builder.safety.credentials import redact

SECRET = "s3cr3tTOKEN"


@pytest.mark.parametrize("text,expected", [
    (f"https://user:{SECRET}@host/simple", "https://user:***@host/simple"),
    (f"https://{SECRET}@host/simple", "https://***@host/simple"),
    (f"u:{SECRET}@host/simple", "u:***@host/simple"),
    (f"https:/u:{SECRET}@host/simple", "https:/u:***@host/simple"),
    (f"https:u:{SECRET}@host/simple", "https:***@host/simple"),
    (f"https://host/simple?token={SECRET}&x=1", "https://host/simple?token=***&x=1"),
    (f"https://host/simple?x=1&access_token={SECRET}", "https://host/simple?x=1&access_token=***"),
    (f"https://host/s?X-Amz-Signature={SECRET}", "https://host/s?X-Amz-Signature=***"),
    (f"https://a:{SECRET}@h1/s https://b:{SECRET}@h2/s", "https://a:***@h1/s https://b:***@h2/s"),
    (f"https://u:{SECRET}@host:99999/simple", "https://u:***@host:99999/simple"),
    ("stackbuild/qlora:2023.07-cpu@sha256:0123abcd", "stackbuild/qlora:2023.07-cpu@sha256:0123abcd"),
    ("qlora:2023.07-cpu@sha256:0123abcd", "qlora:2023.07-cpu@sha256:0123abcd"),
    ("localhost:5000/stackbuild/qlora:2026.11-cpu", "localhost:5000/stackbuild/qlora:2026.11-cpu"),
])
def test_redact(text, expected):
    assert redact(text) == expected


URLS = [f"u:{SECRET}@host/simple", f"https:/u:{SECRET}@host/simple", f"https://host/simple?token={SECRET}",
        f"https://u:{SECRET}@host:99999/simple", f"ftp://u:{SECRET}@host/simple", f"https://u:{SECRET}@host/simple"]


@pytest.mark.parametrize("url", URLS)
def test_no_setting_prints_a_credential(cli, tmp_path, monkeypatch, url):
    monkeypatch.setenv("STACKBUILD_PIP_INDEX_URL", url)
    for args in (("config", "show"), ("config", "show", "--json")):
        code, out, err = cli(*args)
        assert code in (0, 6), err
        assert SECRET not in out + err
        assert "Traceback" not in err
        if code == 6:
            assert err.startswith("error: $STACKBUILD_PIP_INDEX_URL: pip_index_url ")
        elif "--json" in args:
            assert "***" in json.loads(out)["pip_index_url"]["value"]
    monkeypatch.delenv("STACKBUILD_PIP_INDEX_URL")
    config = tmp_path / "c.toml"
    config.write_text(f'pip_extra_index_url = "{url}"\n')
    code, out, err = cli("--config", str(config), "config", "show")
    assert SECRET not in out + err and code in (0, 6)


def test_build_output_is_redacted_before_it_is_shown_or_logged():
    from builder.engine.api import BuildLog
    log, events = BuildLog(), []
    log.record(f"Looking in indexes: https://u:{SECRET}@pypi.example/simple, https://pypi.example/s?token={SECRET}",
               events.append)
    assert SECRET not in log.lines[0] and SECRET not in events[0].text
    assert log.lines[0] == "Looking in indexes: https://u:***@pypi.example/simple, https://pypi.example/s?token=***"


# -- issue 26, item 2: one masker for every spelling ----------------------------------------------

@pytest.mark.parametrize("text,expected", [
    (f"https://user:p@{SECRET}@host/simple", "https://user:***@host/simple"),
    (f"https://:{SECRET}@host/simple", "https://:***@host/simple"),
    (f"https://{SECRET}:@host/simple", "https://***:@host/simple"),
    (f"https://us@er:{SECRET}@host", "https://us@er:***@host"),
    (f"https://host/simple?bearer={SECRET}", "https://host/simple?bearer=***"),
    (f"https://host/simple?jwt={SECRET}&page=2", "https://host/simple?jwt=***&page=2"),
    (f"https://host/simple#token={SECRET}", "https://host/simple#token=***"),
    (f"https://host/simple?sig={SECRET}&api_key={SECRET}", "https://host/simple?sig=***&api_key=***"),
    (f"Authorization: Bearer {SECRET}", "Authorization: Bearer ***"),
    (f"url='https://u:{SECRET}@h/x'", "url='https://u:***@h/x'"),
    # what is not a credential stays as written
    ("pkg @ git+https://github.com/org/repo@v1.0", "pkg @ git+https://github.com/org/repo@v1.0"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
    ("root@4f3c2b:/workspace#", "root@4f3c2b:/workspace#"),
    ("qlora@2026.11 and a@b.example", "qlora@2026.11 and a@b.example"),
    ("https://host/simple?page=2&name=x", "https://host/simple?page=2&name=x"),
])
def test_redact_every_spelling(text, expected):
    assert redact(text) == expected


_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# what a password may hold (RFC 3986's sub-delims, '@' and ':' written raw as careless people do;
# '/' ends the authority for pip and urllib too, so it is left out)
_PASSWORD_CHARS = _SAFE + "-._~!$&'()*+,;=:@%?#"
_SECRET_PARAMETERS = ["token", "access_token", "bearer", "jwt", "key", "api_key", "secret", "client_secret",
                      "password", "passwd", "sig", "X-Amz-Signature", "auth", "authToken", "credential",
                      "session_id", "private_token"]


def _generated_urls(count: int, seed: int = 26):
    """(text, secret) pairs: a credential in every position a URL can hold one, in varied surroundings."""
    import random
    rng = random.Random(seed)

    def word(chars: str, low: int, high: int) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(low, high)))

    for _ in range(count):
        secret = "S3CR" + word(_SAFE, 4, 12)
        scheme = rng.choice(["https://", "http://", "https:/", "git+https://", "ftp://", ""])
        user = rng.choice(["", "user", "us@er", "me.name", "x-token", "a%40b", "__token__"])
        host = rng.choice(["pypi.example", "10.0.0.1", "[::1]", "host.example:8443", "localhost:99999"])
        path = rng.choice(["", "/", "/simple", "/simple/", "/a/b@c/d"])
        form = rng.choice(["password", "password-with-at", "token-only", "empty-password", "query", "fragment"])
        if form in ("password", "password-with-at"):
            password = word(_PASSWORD_CHARS.replace("?", "").replace("#", ""), 0, 6)
            if form == "password-with-at":
                password += "@"
            password += secret + word(_PASSWORD_CHARS, 0, 6)
            url = f"{scheme}{user}:{password}@{host}{path}"
        elif form == "token-only":
            url = f"{scheme or 'https://'}{secret}@{host}{path}"
        elif form == "empty-password":
            url = f"{scheme or 'https://'}{secret}:@{host}{path}"
        else:
            name = rng.choice(_SECRET_PARAMETERS)
            lead = "?" if form == "query" else "#"
            before = rng.choice(["", "page=2&", "a=b;"])
            after = rng.choice(["", "&x=1", "&y=z#frag"]) if form == "query" else rng.choice(["", "&x=1"])
            url = f"{scheme or 'https://'}{host}{path or '/'}{lead}{before}{name}={secret}{after}"
        surround = rng.choice(["{}", "'{}'", '"{}"', "--index-url={}", "Looking in indexes: {}, https://b/s",
                               "error: {} is not valid", '{{"value": "{}"}}', "({})", "<{}>"])
        yield surround.format(url), secret


def test_no_generated_url_keeps_its_credential():
    """A property over 5000 generated URLs: the secret never survives, and the host always does."""
    cases = list(_generated_urls(5000))
    assert len({text for text, _ in cases}) > 4000
    for text, secret in cases:
        masked = redact(text)
        assert secret not in masked, (text, masked)
        assert "S3CR" not in masked, (text, masked)
        assert redact(masked) == masked, text  # idempotent: masking twice changes nothing
