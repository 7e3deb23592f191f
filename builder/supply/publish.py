"""What travels with a pushed image: its signature, its SBOM and its provenance, and reading them back.

``push`` puts, beside the manifest digest it pushed (cosign's tag scheme, so registries without the
referrers API serve them): ``sha256-<hex>.sbom`` (CycloneDX JSON), ``sha256-<hex>.att`` (the
provenance statement in a DSSE envelope) and, with a ``signing_key``, ``sha256-<hex>.sig`` (the
signature, last, so a signed image has its documents). ``inspect`` reads them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..config import Settings
from ..engine.api import BuildEvent, Engine, ImageEngine, OnEvent
from ..errors import RegistryError, StackbuildError
from ..images.oci import Registry, Repository, artifact_layers, attachment_tag, put_artifact
from .provenance import DSSE_MEDIA_TYPE, PREDICATE_TYPE, envelope, open_envelope, statement
from ..images.registry import push_image
from ..render.dockerfile import BuildContext
from .sbom import sbom_json
from ..images.signing import (IMAGE_CONFIG, SIGNATURE_ANNOTATION, SIMPLE_SIGNING, load_private_key, sign_image,
                      trusted_keys, verifies)

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
EMPTY_IMAGE_CONFIG = b'{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}'


@dataclass(frozen=True)
class Published:
    name: str
    digest: str
    attached: dict[str, str] = field(default_factory=dict)  # sbom / provenance / signature -> tag


def push_and_attach(engine: Engine, context: BuildContext, registry: str, on_event: OnEvent = lambda event: None, *,
                    settings: Settings) -> tuple:
    """Push the image of this plan, then attach its SBOM and provenance and sign it (with a signing_key)."""
    key = load_private_key(settings.signing_key) if settings.signing_key else None  # a bad key fails first
    ref, pushed = push_image(engine, context, registry, on_event)
    digest = pushed[0].digest
    repository = Repository.of(ref.immutable)
    target = Registry(repository)
    attached: dict[str, str] = {}
    info = engine.image(ref.immutable) or {}
    labels = dict((info.get("Config") or {}).get("Labels") or {})
    config = (IMAGE_CONFIG, EMPTY_IMAGE_CONFIG)

    on_event(BuildEvent("note", "listing what the image holds (SBOM)"))
    document = sbom_json(engine, engine, ref.immutable).encode()
    attached["sbom"] = attachment_tag(digest, "sbom")
    put_artifact(target, attached["sbom"], [(SBOM_MEDIA_TYPE, document, {})], config)

    provenance = envelope(statement(context, str(repository), digest, labels), key)
    attached["provenance"] = attachment_tag(digest, "att")
    put_artifact(target, attached["provenance"], [(DSSE_MEDIA_TYPE, provenance, {
        "predicateType": PREDICATE_TYPE, SIGNATURE_ANNOTATION: ""})], config)
    if key is not None:
        attached["signature"] = sign_image(target, digest, key)
    else:
        on_event(BuildEvent("warning", "no signing_key is set: the image is pushed unsigned (pull with verify_keys "
                                       "refuses it)"))
    for item in attached.values():
        on_event(BuildEvent("note", f"attached {repository}:{item}"))
    return ref, [Published(p.name, p.digest, attached) for p in pushed]


def attachments(engine: ImageEngine, image: str, settings: Settings) -> list[dict]:
    """What each registry the image was pushed to keeps beside it: signatures, SBOM, provenance."""
    info = engine.image(image) or {}
    keys = trusted_keys(settings.verify_keys)
    found = []
    for repo_digest in info.get("RepoDigests") or []:
        name, _, digest = repo_digest.partition("@")
        try:
            repository = Repository.of(name)
        except RegistryError:
            continue  # a Docker Hub short name: stackbuild never pushes there
        try:
            found.append(_attachments(Registry(repository, timeout=20), repository, digest, keys))
        except StackbuildError as exc:
            found.append({"repository": str(repository), "digest": digest, "error": str(exc)})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a document that is not what it says
            found.append({"repository": str(repository), "digest": digest,
                          "error": f"an attachment is not a CycloneDX document or a DSSE envelope ({exc!r:.200})"})
    return found


def _attachments(registry: Registry, repository: Repository, digest: str, keys: list) -> dict:
    entry: dict = {"repository": str(repository), "digest": digest}
    signatures = artifact_layers(registry, attachment_tag(digest, "sig")) or []
    signed = [(layer, data) for layer, data in signatures if layer.get("mediaType") == SIMPLE_SIGNING]
    entry["signatures"] = len(signed)
    entry["verified_by"] = sorted({name for layer, data in signed for name, key in keys
                                   if verifies(key, data, (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, ""))})
    sbom = artifact_layers(registry, attachment_tag(digest, "sbom")) or []
    if sbom:
        document = json.loads(sbom[0][1])
        entry["sbom"] = {"format": f"{document.get('bomFormat')} {document.get('specVersion')}",
                         "components": len(document.get("components") or [])}
    provenance = artifact_layers(registry, attachment_tag(digest, "att")) or []
    if provenance:
        body, signed_by = open_envelope(provenance[0][1], keys)
        entry["provenance"] = {"statement": body, "verified_by": signed_by}
    return entry
