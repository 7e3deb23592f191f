"""The loopback site server and site.sh: settings reach a step's environment, then vanish."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
import pytest

from builder.errors import ConfigError
from builder.safety.paths import templates_dir
from builder.engine.site_server import SITE_PORT, SiteServer

SITE_SH = templates_dir() / "context" / "site.sh"
CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_site_sh_uses_the_server_port():
    assert f"/dev/tcp/127.0.0.1/{SITE_PORT};" in SITE_SH.read_text()


def test_no_values_means_no_server():
    port = _free_port()
    with SiteServer({}, port=port) as server:
        assert server._server is None
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_port_in_use_is_a_clear_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: the port is in use"):
            with SiteServer({"PIP_INDEX_URL": "https://x/simple"}, port=port):
                pass


def _run_step(script: str, port: int, tmp_path: Path) -> str:
    # site.sh on another port: a real build on this host may hold the fixed one
    copy = tmp_path / "site.sh"
    copy.write_text(SITE_SH.read_text().replace(f"/{SITE_PORT};", f"/{port};"))
    return subprocess.run(
        ["bash", "-c", f". {copy} && site_begin && {script}"], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to run site.sh")
def test_a_step_sees_the_settings_and_site_end_removes_them(tmp_path):
    values = {"PIP_INDEX_URL": "https://user:t0ken@index.example/simple",
              "PIP_EXTRA_INDEX_URL": "https://a/simple https://b/simple", "CA_BUNDLE": CA}
    script = ('echo "index=$PIP_INDEX_URL"; echo "extra=$PIP_EXTRA_INDEX_URL"; grep -c MIIBfake "$PIP_CERT"; '
              'echo "uv=$UV_INDEX_URL|$UV_EXTRA_INDEX_URL|$SSL_CERT_FILE|${UV_NO_CACHE:-cache}"; '
              'echo "apt=$(cat "$APT_CONFIG")"; dir=$SITE_DIR; site_end; '
              'echo "after=${PIP_INDEX_URL:-unset} ${PIP_CERT:-unset} ${UV_INDEX_URL:-unset} ${UV_NO_CACHE:-unset}"; '
              'test ! -e "$dir" && echo removed')
    port = _free_port()
    with SiteServer(values, port=port) as server:
        out = _run_step(script, port, tmp_path)
        assert server.requests == 1
    lines = out.splitlines()
    assert lines[0] == "stackbuild: site settings for this step: CA_BUNDLE PIP_EXTRA_INDEX_URL PIP_INDEX_URL"
    assert "index=https://user:t0ken@index.example/simple" in lines
    assert "extra=https://a/simple https://b/simple" in lines
    assert "1" in lines
    assert any(line.startswith('apt=Acquire::https::CAInfo "') for line in lines)
    # uv (which installs the locked layers) gets the same indexes and CA, and no cache outside a cache mount
    uv = next(line for line in lines if line.startswith("uv="))
    index, extra, ca, cache = uv[len("uv="):].split("|")
    assert (index, extra, cache) == ("https://user:t0ken@index.example/simple", "https://a/simple https://b/simple", "1")
    assert ca.startswith("/tmp/stackbuild-site.") and ca.endswith("/ca.pem")
    assert lines[-2:] == ["after=unset unset unset unset", "removed"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to run site.sh")
def test_without_a_server_a_step_runs_unchanged(tmp_path):
    out = _run_step('echo "index=${PIP_INDEX_URL:-unset}"; site_end; echo done', _free_port(), tmp_path)
    assert out.splitlines() == ["index=unset", "done"]
