"""Image signatures in cosign's format, which skopeo (containers/image) also verifies as sigstore attachments.

A signature belongs to a manifest digest, never to a tag. It is a simple-signing payload
(``{"critical": {"identity": {"docker-reference": REPO}, "image": {"docker-manifest-digest": DIGEST},
"type": "cosign container image signature"}, "optional": null}``), signed with ECDSA over its
SHA-256 (DER, base64) and stored as one layer of the OCI manifest under the tag
``sha256-<hex>.sig`` beside the image, the signature in the layer's
``dev.cosignproject.cosign/signature`` annotation. `cosign verify --key` and skopeo with a
``sigstoreSigned`` policy (``signedIdentity: matchRepository``) accept it.

Keys: ``signing_key`` is an EC P-256 private key in PEM (PKCS#8 or SEC1; an encrypted one takes its
password from $STACKBUILD_SIGNING_KEY_PASSWORD); ``verify_keys`` are public keys in PEM (cosign.pub).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import ConfigError, RegistryError
from .oci import Registry, Repository, artifact_layers, attachment_tag, put_artifact, sha256_digest
from ..safety.printable import printable
from ..safety.files import read_bytes

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
MAX_KEY_BYTES = 64 * 1024
PASSWORD_VARIABLE = "STACKBUILD_SIGNING_KEY_PASSWORD"


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The signing key (ConfigError naming the file and what is wrong with it)."""
    try:
        data = read_bytes(path, MAX_KEY_BYTES)
    except OSError as exc:
        raise ConfigError(f"signing_key {printable(str(path))} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    password = os.environ.get(PASSWORD_VARIABLE)
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        raise ConfigError(f"signing_key {printable(str(path))} is encrypted: set ${PASSWORD_VARIABLE}") from None
    except ValueError as exc:
        raise ConfigError(f"signing_key {printable(str(path))} is not a PEM private key ({exc}); make one with "
                          "`openssl ecparam -name prime256v1 -genkey -noout -out cosign.key`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"signing_key {printable(str(path))} is not an EC P-256 key (cosign's kind)")
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        data = read_bytes(path, MAX_KEY_BYTES)
    except OSError as exc:
        raise ConfigError(f"verify_keys: {printable(str(path))} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"verify_keys: {printable(str(path))} is not a PEM public key ({exc}); `openssl ec -in "
                          "cosign.key -pubout -out cosign.pub` makes one from the signing key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"verify_keys: {printable(str(path))} is not an EC public key")
    return key


def trusted_keys(paths: Iterable[Path]) -> list[tuple[str, ec.EllipticCurvePublicKey]]:
    """(file, public key) of every verify_keys entry (ConfigError for a bad one)."""
    return [(str(path), load_public_key(path)) for path in paths]


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def payload(repository: str, digest: str) -> bytes:
    """The simple-signing payload of one manifest digest, as cosign writes it (skopeo parses it strictly)."""
    body = {"critical": {"identity": {"docker-reference": repository},
                         "image": {"docker-manifest-digest": digest}, "type": PAYLOAD_TYPE},
            "optional": None}
    return json.dumps(body, separators=(",", ":")).encode()


def sign_bytes(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    """base64 of the DER ECDSA signature over SHA-256(data)."""
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def verifies(key: ec.EllipticCurvePublicKey, data: bytes, signature_b64: str) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _config(payloads: list[bytes]) -> bytes:
    """The image config cosign gives a signature manifest (its layers' diff ids are the payloads)."""
    config = {"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
              "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
              "rootfs": {"type": "layers", "diff_ids": [sha256_digest(p) for p in payloads]}}
    return json.dumps(config, separators=(",", ":")).encode()


def sign_image(registry: Registry, digest: str, key: ec.EllipticCurvePrivateKey) -> str:
    """Sign one manifest digest of ``registry``'s repository; keeps other keys' signatures. The .sig tag."""
    tag = attachment_tag(digest, "sig")
    body = payload(str(registry.repository), digest)
    ours = (SIMPLE_SIGNING, body, {SIGNATURE_ANNOTATION: sign_bytes(key, body)})
    kept = []
    for layer, data in artifact_layers(registry, tag) or []:
        annotations = layer.get("annotations") or {}
        if layer.get("mediaType") == SIMPLE_SIGNING and annotations.get(SIGNATURE_ANNOTATION) and not (
                data == body and verifies(key.public_key(), data, annotations[SIGNATURE_ANNOTATION])):
            kept.append((SIMPLE_SIGNING, data, dict(annotations)))
    layers = [*kept, ours]
    put_artifact(registry, tag, layers, (IMAGE_CONFIG, _config([data for _, data, _ in layers])))
    return tag


@dataclass(frozen=True)
class Verified:
    digest: str
    key: str  # the public key file that verified it


def verify_image(name: str, reference: str, keys: Iterable[tuple[str, ec.EllipticCurvePublicKey]]) -> Verified:
    """The manifest digest ``name:reference`` points at, signed by one of ``keys`` for this repository.

    RegistryError (reason ``signature``) when it has no signature, or none by a trusted key for exactly
    this digest and repository; ``not-found`` when the registry has no such tag.
    """
    repository = Repository.of(name)
    registry = Registry(repository)
    digest = registry.digest_of(reference)
    if digest is None:
        raise RegistryError(f"{repository}:{reference} is not in the registry", "not-found")
    keys = list(keys)
    layers = artifact_layers(registry, attachment_tag(digest, "sig"))
    if not layers:
        raise RegistryError(f"{repository}:{reference} ({digest}) is not signed: no {attachment_tag(digest, 'sig')} "
                            "beside it. It was refused and nothing was pulled; push it again with a signing_key "
                            "set, or take verify_keys out of the settings to accept unsigned images", "signature")
    seen = []
    for layer, data in layers:
        signature = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if layer.get("mediaType") != SIMPLE_SIGNING or not signature:
            continue
        for key_name, key in keys:
            if not verifies(key, data, signature):
                continue
            problem = _payload_problem(data, str(repository), digest)
            if problem is None:
                return Verified(digest, key_name)
            seen.append(problem)
    why = "; ".join(dict.fromkeys(seen)) or f"none of its {len(layers)} signature(s) was made by a key in verify_keys"
    raise RegistryError(f"{repository}:{reference} ({digest}) is not signed by a trusted key ({why}). It was "
                        "refused and nothing was pulled", "signature")


def _repository_of(reference: str) -> str:
    name = reference.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else name


def _payload_problem(data: bytes, repository: str, digest: str) -> str | None:
    try:
        critical = json.loads(data)["critical"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        identity = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        return "a trusted key signed a payload that is not a cosign simple-signing payload"
    if kind != PAYLOAD_TYPE:
        return f"a trusted key signed a payload of type '{printable(str(kind))}'"
    if signed_digest != digest:
        return f"a trusted signature names another digest, {printable(str(signed_digest))}"
    if _repository_of(str(identity)) != repository:
        return f"a trusted signature names another repository, {printable(str(identity))}"
    return None
