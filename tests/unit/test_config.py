"""Settings: precedence, validation with the source named, credentials masked everywhere shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.config import load_settings, mask_url
from builder.errors import ConfigError

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("REGISTRY", "BUILD_NETWORK", "CA_BUNDLE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
                 "DEBIAN_MIRROR", "UBUNTU_MIRROR", "CONFIG"):
        monkeypatch.delenv(f"STACKBUILD_{name}", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_defaults_when_nothing_is_set():
    settings = load_settings()
    assert settings.registry is None and settings.build_network == "default" and settings.site == {}
    assert {row[2] for row in settings.shown()} == {"default"}


def test_file_then_env_then_flag(tmp_path, monkeypatch):
    config = tmp_path / "xdg" / "stackbuild" / "config.toml"
    config.parent.mkdir(parents=True)
    ca = tmp_path / "ca.pem"
    ca.write_text(CA)
    config.write_text(f'registry = "localhost:5000/sb"\nbuild_network = "bridge"\nca_bundle = "{ca}"\n')
    monkeypatch.setenv("STACKBUILD_BUILD_NETWORK", "none")
    settings = load_settings(overrides={"build_network": "host", "registry": None})
    assert settings.registry == "localhost:5000/sb" and settings.sources["registry"] == str(config)
    assert settings.build_network == "host" and settings.sources["build_network"] == "command line"
    assert settings.site == {"CA_BUNDLE": CA}
    monkeypatch.setenv("STACKBUILD_REGISTRY", "ghcr.io/org")
    assert load_settings().registry == "ghcr.io/org"
    assert load_settings().sources["registry"] == "$STACKBUILD_REGISTRY"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('regsitry = "x"', "unknown setting 'regsitry' (did you mean 'registry'?"),
        ('build_network = "overlay"', "build_network 'overlay' is not one of default, host, bridge, none"),
        ('registry = "HTTP://x"', "registry 'HTTP://x' is not HOST[:PORT][/PATH]"),
        ('pip_index_url = "ftp://u:secret@h/simple"', "pip_index_url 'ftp://u:***@h/simple' is not an http(s) URL"),
        ('ca_bundle = "/nonexistent/ca.pem"', "ca_bundle /nonexistent/ca.pem cannot be read (No such file or directory)"),
        ("registry = 5", "registry must be a non-empty string"),
        ("registry = ", "invalid TOML"),
        ('debian_mirror = "http://a http://b"', "debian_mirror takes one URL"),
    ],
)
def test_bad_settings_name_their_file(toml, message, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(info.value).startswith(f"{config}")
    assert message in str(info.value)
    assert "secret" not in str(info.value)


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("STACKBUILD_BUILD_NETWORK", "mesh")
    with pytest.raises(ConfigError, match=r"^\$STACKBUILD_BUILD_NETWORK: build_network 'mesh'"):
        load_settings()


def test_ca_bundle_must_hold_a_certificate(tmp_path, monkeypatch):
    bad = tmp_path / "not.pem"
    bad.write_text("hello")
    monkeypatch.setenv("STACKBUILD_CA_BUNDLE", str(bad))
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        load_settings()


def test_explicit_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_credentials_are_masked():
    assert mask_url("https://user:tok3n@pypi.example/simple") == "https://user:***@pypi.example/simple"
    assert mask_url("https://tok3n@h:8443/s http://plain/s") == "https://***@h:8443/s http://plain/s"


def test_config_show_masks_credentials(cli, monkeypatch):
    monkeypatch.setenv("STACKBUILD_PIP_INDEX_URL", "https://me:s3cr3t@index.example/simple")
    code, out, _ = cli("config", "show", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["pip_index_url"] == {"value": "https://me:***@index.example/simple",
                                      "source": "$STACKBUILD_PIP_INDEX_URL"}
    code, out, _ = cli("config", "show")
    assert "s3cr3t" not in out and "me:***@index.example" in out


def test_bad_setting_exit_code(cli, monkeypatch):
    monkeypatch.setenv("STACKBUILD_BUILD_NETWORK", "mesh")
    code, _, err = cli("config", "show")
    assert code == 6 and err.startswith("error: $STACKBUILD_BUILD_NETWORK: build_network 'mesh'")


def test_global_config_flag(cli, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('registry = "localhost:5000/x"\n')
    code, out, _ = cli("--config", str(config), "config", "show", "--json")
    assert code == 0 and json.loads(out)["registry"]["value"] == "localhost:5000/x"
    assert Path(str(config)).exists()
