"""Site and user settings: registry, build network, CA bundle, package indexes, apt mirrors, engine.

Never part of a profile. Precedence, lowest first: defaults, the config file (TOML at
$STACKBUILD_CONFIG, else $XDG_CONFIG_HOME/stackbuild/config.toml), STACKBUILD_* environment
variables, command-line flags. Every value is validated where it is read, and its source is
kept so `stackbuild config show` can say where it came from. Credentials inside index URLs are
masked whenever a setting is shown.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .engine.connect import BUILDER_RULE, BUILDX_BUILDER, ENGINE_KINDS
from .engine.references import registry_problem
from .safety.printable import printable
from .safety.credentials import redact
from .safety.files import MAX_CA_BUNDLE_BYTES, MAX_CONFIG_BYTES, read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

NETWORK_MODES = ("default", "host", "bridge", "none")
COMPRESSIONS = ("gzip", "zstd")  # of the layers an image is stored, and so pushed, with
# The settings that take one of a few words.
CHOICES = {"build_network": NETWORK_MODES, "engine": ENGINE_KINDS, "compression": COMPRESSIONS}
PARTITION = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")  # a Slurm partition
INTERFACE = re.compile(r"^\^?[A-Za-z0-9_.:-]{1,32}(,[A-Za-z0-9_.:-]{1,32})*\Z")  # NCCL_SOCKET_IFNAME's syntax


@dataclass(frozen=True)
class Settings:
    """Effective settings; ``sources`` maps each set field to where its value came from."""

    registry: str | None = None
    build_network: str = "default"
    ca_bundle: Path | None = None
    pip_index_url: str | None = None
    pip_extra_index_url: str | None = None
    debian_mirror: str | None = None
    ubuntu_mirror: str | None = None
    engine: str = "auto"
    builder: str | None = None
    compression: str = "gzip"
    signing_key: Path | None = None  # EC P-256 private key (PEM): push signs what it pushed (builder/images/signing.py)
    verify_keys: tuple[Path, ...] = ()  # public keys (PEM): pull and pull-or-build take only images they signed
    audit_url: str = "https://pypi.org/pypi"  # PyPI's JSON API, whose `vulnerabilities` audit reads
    partition: str | None = None  # launch slurm: the partition a job asks for
    gpus_per_node: int | None = None  # launch: GPUs (processes) per node; default 8 on a GPU image, 1 on cpu
    network_interface: str | None = None  # launch: NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME of the jobs it writes
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def site(self) -> dict[str, str]:
        """The settings a build reads from stackbuild's loopback site server (never from a layer)."""
        out: dict[str, str] = {}
        if self.pip_index_url:
            out["PIP_INDEX_URL"] = self.pip_index_url
        if self.pip_extra_index_url:
            out["PIP_EXTRA_INDEX_URL"] = self.pip_extra_index_url
        if self.debian_mirror:
            out["DEBIAN_MIRROR"] = self.debian_mirror
        if self.ubuntu_mirror:
            out["UBUNTU_MIRROR"] = self.ubuntu_mirror
        if self.ca_bundle:
            out["CA_BUNDLE"] = read_ca_bundle(self.ca_bundle, "ca_bundle")
        return out

    def shown(self) -> list[tuple[str, str, str]]:
        """(name, value with credentials masked, source) for every setting."""
        rows = []
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            text = "-" if value is None or value == () else (
                ", ".join(map(str, value)) if isinstance(value, tuple) else str(value))
            if f.name in URL_SETTINGS and value:
                text = mask_url(value)
            rows.append((f.name, text, self.sources.get(f.name, "default")))
        return rows


URL_SETTINGS = ("pip_index_url", "pip_extra_index_url", "debian_mirror", "ubuntu_mirror", "audit_url")
SETTING_NAMES = tuple(f.name for f in fields(Settings) if f.name != "sources")
ENV_PREFIX = "STACKBUILD_"


def mask_url(url: str) -> str:
    """https://user:token@host/x -> https://user:***@host/x, in every spelling (see builder/safety/credentials.py)."""
    return redact(url)


def read_ca_bundle(path: Path, origin: str) -> str:
    """The CA bundle's text: a regular UTF-8 file of at most MAX_CA_BUNDLE_BYTES (ConfigError otherwise)."""
    try:
        return read_text(path, MAX_CA_BUNDLE_BYTES)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{origin}: ca_bundle {printable(str(path))} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def _key_file(name: str, value: str, origin: str) -> Path:
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        raise ConfigError(f"{origin}: {name}: {printable(str(path))} is not a file (a PEM key)")
    return path.resolve()


def _check(name: str, value: object, origin: str) -> object:
    """Validate one setting; raise ConfigError naming where it came from."""
    if name == "verify_keys":  # a TOML list, or one string of comma-separated paths (a variable, a flag)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items) or not items:
            raise ConfigError(f"{origin}: verify_keys must be a list of public key files (PEM), e.g. "
                              "[\"/etc/stackbuild/cosign.pub\"], or one string of comma-separated paths")
        return tuple(_key_file(name, item, origin) for item in items)
    if name == "gpus_per_node" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: {name} must be a non-empty string")
    value = value.strip()
    if name == "registry":
        problem = registry_problem(value)
        if problem:
            raise ConfigError(f"{origin}: registry '{printable(value)}' {problem}")
        return value
    if name == "gpus_per_node":
        if not value.isdigit() or not 1 <= int(value) <= 64:
            raise ConfigError(f"{origin}: gpus_per_node '{printable(value)}' is not a count from 1 to 64")
        return int(value)
    if name == "partition":
        if not PARTITION.match(value):
            raise ConfigError(f"{origin}: partition '{printable(value)}' is not a Slurm partition name (letters, "
                              "digits, '_', '.', '-')")
        return value
    if name == "network_interface":
        if not INTERFACE.match(value):
            raise ConfigError(f"{origin}: network_interface '{printable(value)}' is not an interface list as "
                              "NCCL_SOCKET_IFNAME takes it (eth0, ib0,ib1 or ^lo,docker)")
        return value
    if name == "builder":
        if not BUILDX_BUILDER.match(value):
            raise ConfigError(f"{origin}: builder '{printable(value)}' is not a buildx builder name ({BUILDER_RULE})")
        return value
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ConfigError(f"{origin}: {name} '{printable(str(value))}' is not one of {', '.join(CHOICES[name])}")
        return value
    if name == "signing_key":
        return _key_file(name, value, origin)
    if name == "ca_bundle":
        path = Path(value).expanduser()
        text = read_ca_bundle(path, origin)
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ConfigError(f"{origin}: ca_bundle {path} holds no PEM certificate")
        try:
            return path.resolve()
        except (OSError, RuntimeError):
            raise ConfigError(f"{origin}: ca_bundle {path} cannot be resolved") from None
    # URLs: pip index, extra index (space-separated list, as pip takes it), distribution mirrors
    for url in value.split():
        try:
            parts = urlsplit(url)
            is_url = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # an unclosed IPv6 bracket
            is_url = False
        if not is_url or any(c in url for c in "\"'`$\\#&|"):
            raise ConfigError(f"{origin}: {name} '{printable(mask_url(url))}' is not an http(s) URL "
                              "(write it as https://[user:token@]host[:port]/path)")
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"{origin}: {name} '{printable(mask_url(url))}' has an invalid port "
                              "(a number from 1 to 65535)") from None
    if name in ("debian_mirror", "ubuntu_mirror", "audit_url") and len(value.split()) != 1:
        raise ConfigError(f"{origin}: {name} takes one URL")
    return value


def config_path(explicit: Path | None = None) -> Path:
    """The config file in force: --config, $STACKBUILD_CONFIG, or the XDG default."""
    if explicit is not None:
        return explicit
    if os.environ.get("STACKBUILD_CONFIG"):
        return Path(os.environ["STACKBUILD_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "stackbuild" / "config.toml"


def load_settings(config_file: Path | None = None, overrides: dict[str, object | None] | None = None) -> Settings:
    """Defaults < config file < STACKBUILD_* environment < overrides (command-line flags)."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    path = config_path(config_file)
    if path.exists() or path.is_symlink() or config_file is not None:
        try:
            data = tomllib.loads(read_text(path, MAX_CONFIG_BYTES))
        except FileNotFoundError:
            raise ConfigError(f"config file {printable(str(path))} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {printable(str(path))} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
        for key, value in data.items():
            if key not in SETTING_NAMES:
                close = difflib.get_close_matches(key, SETTING_NAMES, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ConfigError(f"{path}: unknown setting '{key}' ({hint}settings: {', '.join(SETTING_NAMES)})")
            values[key] = _check(key, value, str(path))
            sources[key] = str(path)
    for key in SETTING_NAMES:
        env = ENV_PREFIX + key.upper()
        if os.environ.get(env):
            values[key] = _check(key, os.environ[env], f"${env}")
            sources[key] = f"${env}"
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _check(key, value, f"--{key.replace('_', '-')}")
            sources[key] = "command line"
    return replace(Settings(), **values, sources=sources)
