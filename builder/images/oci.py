"""A small client of the OCI distribution API (registry v2): manifests and blobs by tag or digest.

What ``docker push``/``pull`` do not cover: reading the manifest digest a tag points at (a signature
belongs to that digest), and writing the artifacts that sit beside an image the way cosign puts
them — tags ``sha256-<hex>.sig`` (signatures), ``.sbom`` and ``.att`` (attestations) holding small
OCI manifests whose layers are the documents. Registries without the referrers API (distribution
2.x, the local one) serve them like any tag.

Plain HTTP for loopback registries (localhost, 127.x: as Docker treats them), HTTPS elsewhere. Auth:
anonymous, or the bearer-token dance with the credentials ``docker login`` stored in the Docker
client's config.json (``auths``; credential helpers are not run).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import RegistryError
from ..safety.printable import printable
from ..safety.files import MAX_JSON_BYTES, read_text

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 64 * 1024 * 1024  # an SBOM or a statement, never a layer of an image
LOOPBACK = re.compile(r"^(localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?\Z")


@dataclass(frozen=True)
class Repository:
    """``host[:port]/path`` of an image name, split."""

    host: str
    path: str

    @classmethod
    def of(cls, name: str) -> Repository:
        """``host[:port]/path[:tag|@digest]`` -> the repository (Docker Hub's short names are not taken)."""
        name = name.split("@", 1)[0]
        last = name.rsplit("/", 1)
        if len(last) == 2 and ":" in last[1]:
            name = name.rsplit(":", 1)[0]
        host, _, path = name.partition("/")
        if not path or not ("." in host or ":" in host or host == "localhost"):
            raise RegistryError(f"'{printable(name)}' names no registry host (write HOST[:PORT]/PATH, e.g. "
                                "localhost:5000/stackbuild/qlora)")
        return cls(host, path)

    def __str__(self) -> str:
        return f"{self.host}/{self.path}"

    @property
    def base_url(self) -> str:
        scheme = "http" if LOOPBACK.match(self.host) else "https"
        return f"{scheme}://{self.host}/v2/{self.path}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attachment_tag(digest: str, suffix: str) -> str:
    """cosign's tag for what belongs to a manifest: sha256:<hex> -> sha256-<hex>.<suffix> (sig, sbom, att)."""
    if not DIGEST.match(digest):
        raise RegistryError(f"'{printable(digest)}' is not a sha256 manifest digest")
    return digest.replace(":", "-") + "." + suffix


def _docker_credentials(host: str) -> tuple[str, str] | None:
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        auths = json.loads(read_text(config, MAX_JSON_BYTES)).get("auths") or {}
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"):
        encoded = (auths.get(key) or {}).get("auth") if isinstance(auths.get(key), dict) else None
        if encoded:
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user, password
    return None


class Registry:
    """One repository of a registry: read and write manifests and blobs."""

    def __init__(self, repository: Repository, timeout: float = 60):
        self.repository = repository
        self.timeout = timeout
        self._token: str | None = None

    # --- HTTP ---

    def _send(self, method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
              limit: int = MAX_MANIFEST_BYTES) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        for attempt in range(2):
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 (http/https only)
                    body = answer.read(limit + 1)
                    if len(body) > limit:
                        raise RegistryError(f"{self.repository}: {method} {url} answered more than {limit} bytes")
                    return answer.status, {k.lower(): v for k, v in answer.headers.items()}, body
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0 and self._authenticate(exc.headers.get("WWW-Authenticate", "")):
                    continue
                return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read(64 * 1024)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise RegistryError(f"cannot reach the registry {self.repository.host}: {reason}", "unreachable") from None
        raise RegistryError(f"{self.repository}: access denied", "denied")  # pragma: no cover - loop returns

    def _authenticate(self, challenge: str) -> bool:
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            return False
        if "scope" not in params:
            params["scope"] = f"repository:{self.repository.path}:pull,push"
        request = urllib.request.Request(realm + "?" + urllib.parse.urlencode(params))
        credentials = _docker_credentials(self.repository.host)
        if credentials:
            basic = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                data = json.loads(answer.read(MAX_JSON_BYTES))
        except (urllib.error.URLError, OSError, ValueError):
            return False
        self._token = data.get("token") or data.get("access_token")
        return bool(self._token)

    def _fail(self, what: str, status: int, body: bytes) -> RegistryError:
        text = body.decode("utf-8", "replace")[:300].strip()
        reason = {404: "not-found", 401: "denied", 403: "denied"}.get(status, "other")
        return RegistryError(f"{what} on {self.repository}: HTTP {status} {printable(text)}".rstrip(), reason)

    # --- manifests ---

    def manifest(self, reference: str) -> tuple[str, str, bytes] | None:
        """(digest, media type, bytes) of the manifest a tag or digest names; None when there is none."""
        status, headers, body = self._send("GET", f"{self.repository.base_url}/manifests/{reference}",
                                           headers={"Accept": ACCEPT})
        if status == 404:
            return None
        if status != 200:
            raise self._fail(f"cannot read manifest {reference}", status, body)
        digest = sha256_digest(body)
        if DIGEST.match(reference) and digest != reference:
            raise RegistryError(f"{self.repository}@{reference}: the registry sent a manifest whose digest is {digest}")
        media_type = headers.get("content-type", "").split(";")[0]
        return digest, media_type, body

    def digest_of(self, reference: str) -> str | None:
        """The manifest digest a tag points at now (computed from the bytes, never taken on trust)."""
        found = self.manifest(reference)
        return found[0] if found else None

    def put_manifest(self, reference: str, manifest: dict) -> str:
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        status, headers, answer = self._send("PUT", f"{self.repository.base_url}/manifests/{reference}", body,
                                             {"Content-Type": manifest["mediaType"]})
        if status not in (200, 201):
            raise self._fail(f"cannot write manifest {reference}", status, answer)
        return sha256_digest(body)

    # --- blobs ---

    def blob(self, digest: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        status, _, body = self._send("GET", f"{self.repository.base_url}/blobs/{digest}", limit=limit)
        if status != 200:
            raise self._fail(f"cannot read blob {digest}", status, body)
        if sha256_digest(body) != digest:
            raise RegistryError(f"{self.repository}: blob {digest} has other content than its digest says")
        return body

    def put_blob(self, data: bytes) -> str:
        digest = sha256_digest(data)
        status, _, _ = self._send("HEAD", f"{self.repository.base_url}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, body = self._send("POST", f"{self.repository.base_url}/blobs/uploads/", b"",
                                           {"Content-Length": "0"})
        location = headers.get("location")
        if status != 202 or not location:
            raise self._fail("cannot start a blob upload", status, body)
        url = urllib.parse.urljoin(self.repository.base_url + "/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        status, _, body = self._send("PUT", url, data, {"Content-Type": "application/octet-stream"})
        if status not in (201, 204):
            raise self._fail(f"cannot upload blob {digest}", status, body)
        return digest


EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"


def put_artifact(registry: Registry, tag: str, layers: list[tuple[str, bytes, dict[str, str]]],
                 config: tuple[str, bytes] = (EMPTY_CONFIG_TYPE, EMPTY_CONFIG),
                 annotations: dict[str, str] | None = None) -> str:
    """An OCI image manifest under ``tag`` whose layers are documents: (media type, bytes, annotations)."""
    config_type, config_bytes = config
    manifest: dict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": registry.put_blob(config_bytes), "size": len(config_bytes)},
        "layers": [],
    }
    for media_type, data, layer_annotations in layers:
        layer = {"mediaType": media_type, "digest": registry.put_blob(data), "size": len(data)}
        if layer_annotations:
            layer["annotations"] = layer_annotations
        manifest["layers"].append(layer)
    if annotations:
        manifest["annotations"] = annotations
    return registry.put_manifest(tag, manifest)


def artifact_layers(registry: Registry, tag: str) -> list[tuple[dict, bytes]] | None:
    """(layer descriptor, its bytes) of the artifact under ``tag``, or None when there is none."""
    found = registry.manifest(tag)
    if found is None:
        return None
    try:
        layers = json.loads(found[2]).get("layers") or []
    except (ValueError, AttributeError):
        raise RegistryError(f"{registry.repository}:{tag} is not a JSON manifest") from None
    if not isinstance(layers, list):
        raise RegistryError(f"{registry.repository}:{tag} is not an image manifest (its layers are no list)")
    return [(layer, registry.blob(layer["digest"])) for layer in layers
            if isinstance(layer, dict) and DIGEST.match(str(layer.get("digest", "")))]
