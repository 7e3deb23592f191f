""".ci/harness.sh's buildx step, driven through its own functions (the script defines them when sourced).

A fixture .deb stands in for Debian's docker-buildx and a file:// mirror serves it; a stand-in `docker`
runs whichever plugin is installed, so nothing here touches the host's own buildx or the network."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / ".ci" / "harness.sh"

pytestmark = [
    pytest.mark.skipif(not (shutil.which("dpkg-deb") and shutil.which("dpkg")), reason="needs dpkg-deb (Debian/Ubuntu)"),
    pytest.mark.skipif(shutil.which("dpkg") is not None and subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip() != "amd64",
        reason="the harness pins the amd64 .deb"),
]

DEBIAN_VERSION = "github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3"
UPSTREAM_NEWER = "github.com/docker/buildx v0.17.1 8c2d2e4"
OLDER = "github.com/docker/buildx v0.10.0 stub"
DEB_PATH = "pool/main/d/docker-buildx/docker-buildx_0.13.1+ds1-3_amd64.deb"


def plugin_script(version_line: str) -> str:
    """A docker-buildx stand-in: answers `version` (alone, or after `buildx` as the CLI calls it) and `inspect`."""
    return textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1" = buildx ] && shift
        case "$1" in
          version) echo "{version_line}" ;;
          inspect) printf 'Name:          default\\nDriver:        docker\\n\\nNodes:\\nName:             default\\nBuildKit version: v0.8+unknown\\n' ;;
          *) exit 1 ;;
        esac
        """)


@pytest.fixture
def site(tmp_path):
    """A file:// mirror serving a docker-buildx .deb, an empty plugin dir and a stand-in docker CLI."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: docker-buildx\nVersion: 0.13.1+ds1-3\nArchitecture: amd64\nMaintainer: test <t@example.org>\n"
        "Description: fixture\n")
    plugin = root / "usr" / "libexec" / "docker" / "cli-plugins" / "docker-buildx"
    plugin.parent.mkdir(parents=True)
    plugin.write_text(plugin_script(DEBIAN_VERSION))
    plugin.chmod(0o755)
    deb = tmp_path / "mirror" / DEB_PATH
    deb.parent.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)

    plugins = tmp_path / "cli-plugins"
    plugins.mkdir()
    docker = tmp_path / "docker"
    docker.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1" = buildx ] || exit 1
        [ -x "{plugins}/docker-buildx" ] || {{ echo "docker: 'buildx' is not a docker command." >&2; exit 1; }}
        exec "{plugins}/docker-buildx" "$@"
        """))
    docker.chmod(0o755)
    return {"deb": deb, "sha256": hashlib.sha256(deb.read_bytes()).hexdigest(), "plugins": plugins,
            "docker": docker, "mirror": tmp_path / "mirror", "payload": plugin.read_bytes()}


def ensure_buildx(site, sha256: str | None = None) -> subprocess.CompletedProcess:
    script = f'source "$1"; BUILDX_DEB_SHA256={sha256 or site["sha256"]}; BUILDX_FALLBACK_MIRRORS=(); ensure_buildx'
    env = {**os.environ, "DOCKER": str(site["docker"]), "STACKBUILD_BUILDX_PLUGIN_DIR": str(site["plugins"]),
           "STACKBUILD_DEBIAN_MIRROR": f"file://{site['mirror']}"}
    return subprocess.run(["bash", "-c", script, "harness", str(HARNESS)], capture_output=True, text=True, env=env,
                          timeout=60)


def install_plugin(site, version_line: str) -> Path:
    plugin = site["plugins"] / "docker-buildx"
    plugin.write_text(plugin_script(version_line))
    plugin.chmod(0o755)
    return plugin


def test_installs_the_verified_plugin_when_no_buildx_answers(site):
    result = ensure_buildx(site)
    assert result.returncode == 0, result.stderr
    plugin = site["plugins"] / "docker-buildx"
    assert re.fullmatch(re.escape(f"buildx: installed (0.13.1, {plugin}, from file://{site['mirror']}/{DEB_PATH}, "
                                  "sha256 verified, ") + r"\d+s\); builder default: docker driver, BuildKit v0\.8\+unknown\n",
                        result.stdout), result.stdout
    assert plugin.read_bytes() == site["payload"] and os.access(plugin, os.X_OK)
    assert sorted(p.name for p in site["plugins"].iterdir()) == ["docker-buildx"]  # no temp file left


def test_a_new_enough_buildx_is_left_alone_and_nothing_is_downloaded(site):
    plugin = install_plugin(site, UPSTREAM_NEWER)
    site["deb"].unlink()
    result = ensure_buildx(site)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "buildx: already installed (0.17.1); builder default: docker driver, BuildKit v0.8+unknown\n"
    assert "v0.17.1" in plugin.read_text()


def test_an_older_buildx_is_replaced(site):
    install_plugin(site, OLDER)
    result = ensure_buildx(site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("buildx: upgraded from 0.10.0 (0.13.1, ")
    assert (site["plugins"] / "docker-buildx").read_bytes() == site["payload"]


def test_a_deb_with_another_sha256_is_refused_and_nothing_is_replaced(site):
    plugin = install_plugin(site, OLDER)
    result = ensure_buildx(site, sha256="0" * 64)
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"sha256 mismatch for file://{site['mirror']}/{DEB_PATH}: got {site['sha256']}, want {'0' * 64}" in result.stderr
    assert "ERROR: buildx: no source served docker-buildx_0.13.1+ds1-3_amd64.deb with sha256" in result.stderr
    assert "v0.10.0" in plugin.read_text()


def test_a_missing_deb_is_a_clear_error(site):
    site["deb"].unlink()
    result = ensure_buildx(site)
    assert result.returncode == 1 and not (site["plugins"] / "docker-buildx").exists()
    assert "set STACKBUILD_DEBIAN_MIRROR to a mirror that has it" in result.stderr


@pytest.mark.parametrize(("have", "ok"), [("0.13.1", True), ("0.13.10", True), ("1.0", True), ("0.13.0", False),
                                          ("0.9.99", False)])
def test_version_at_least_compares_numerically(have, ok):
    result = subprocess.run(["bash", "-c", f'source "$1"; version_at_least {have} 0.13.1', "harness", str(HARNESS)])
    assert (result.returncode == 0) is ok
