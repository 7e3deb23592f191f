"""Credentials are masked wherever a URL or setting is printed (issue 13, item 5)."""

from __future__ import annotations

import json

import pytest

from builder.redact import redact

SECRET = "s3cr3tTOKEN"


@pytest.mark.parametrize("text,expected", [
    (f"https://user:{SECRET}@host/simple", "https://user:***@host/simple"),
    (f"https://{SECRET}@host/simple", "https://***@host/simple"),
    (f"u:{SECRET}@host/simple", "u:***@host/simple"),
    (f"https:/u:{SECRET}@host/simple", "https:/u:***@host/simple"),
    (f"https:u:{SECRET}@host/simple", "https:u:***@host/simple"),
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
    from builder.engine_api import BuildLog
    log, events = BuildLog(), []
    log.record(f"Looking in indexes: https://u:{SECRET}@pypi.example/simple, https://pypi.example/s?token={SECRET}",
               events.append)
    assert SECRET not in log.lines[0] and SECRET not in events[0].text
    assert log.lines[0] == "Looking in indexes: https://u:***@pypi.example/simple, https://pypi.example/s?token=***"
