"""Signatures, SBOM and provenance beside a pushed image, and pull's verification, against the fake
engine and a loopback registry (tests/unit/fake_registry.py); no network beyond 127.0.0.1."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from builder.images.signing import SIGNATURE_ANNOTATION, SIMPLE_SIGNING, payload, public_pem, verifies

from .test_registry import REGISTRY, SPEC, _ref_and_plan

PATH = "sb/alpaca-lora"


def _key_files(tmp_path, name: str) -> tuple[str, str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / f"{name}.key"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public = tmp_path / f"{name}.pub"
    public.write_bytes(public_pem(key))
    return str(private), str(public), key


@pytest.fixture
def keys(tmp_path):
    return {"good": _key_files(tmp_path, "good"), "other": _key_files(tmp_path, "other")}


@pytest.fixture
def pushed(cli, fake, monkeypatch, keys):
    """The stack's image built, then pushed signed with the good key: (ref, digest)."""
    monkeypatch.setenv("STACKBUILD_REGISTRY", REGISTRY)
    assert cli("build", *SPEC, "--no-pull")[0] == 0
    monkeypatch.setenv("STACKBUILD_SIGNING_KEY", keys["good"][0])
    code, out, err = cli("push", *SPEC, "--json")
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    monkeypatch.delenv("STACKBUILD_SIGNING_KEY")
    ref, _ = _ref_and_plan()
    return ref, result["pushed"][0]["digest"], result


def _layers(fake, tag: str) -> list[tuple[dict, bytes]]:
    manifest = json.loads(fake.oci.manifests[PATH, tag][1])
    return [(layer, fake.oci.blobs[layer["digest"]]) for layer in manifest["layers"]]


def _forget_local(fake, ref):
    for name in list(fake.images):
        if name.startswith(REGISTRY):
            fake.images.pop(name)
    fake.pulls.clear()


def test_push_signs_in_cosigns_format_and_attaches_an_sbom_and_provenance(pushed, fake, keys):
    ref, digest, result = pushed
    tag = digest.replace(":", "-")
    assert result["attached"] == {"sbom": f"{tag}.sbom", "provenance": f"{tag}.att", "signature": f"{tag}.sig"}
    assert {f"{tag}.sig", f"{tag}.sbom", f"{tag}.att"} <= fake.oci.tags(PATH)
    # the signature: one simple-signing layer whose payload names this digest and repository, signed by the key
    [(layer, data)] = _layers(fake, f"{tag}.sig")
    assert layer["mediaType"] == SIMPLE_SIGNING and data == payload(f"{REGISTRY}/alpaca-lora", digest)
    assert json.loads(data) == {"critical": {"identity": {"docker-reference": "localhost:5000/sb/alpaca-lora"},
                                             "image": {"docker-manifest-digest": digest},
                                             "type": "cosign container image signature"}, "optional": None}
    signature = layer["annotations"][SIGNATURE_ANNOTATION]
    assert verifies(keys["good"][2].public_key(), data, signature)
    assert not verifies(keys["other"][2].public_key(), data, signature)
    # the SBOM: CycloneDX with the image's packages, the lock's hash on the Python one, the base with its digest
    [(layer, data)] = _layers(fake, f"{tag}.sbom")
    sbom = json.loads(data)
    assert layer["mediaType"] == "application/vnd.cyclonedx+json" and sbom["bomFormat"] == "CycloneDX"
    by_name = {c["name"]: c for c in sbom["components"]}
    assert by_name["six"]["purl"] == "pkg:pypi/six@1.16.0"
    assert by_name["six"]["hashes"] == [{"alg": "SHA-256", "content": "1" * 64}]
    assert by_name["six"]["licenses"] == [{"license": {"id": "MIT"}}]
    assert by_name["bash"]["purl"] == "pkg:deb/debian/bash@5.2.15-2%2Bb13?arch=amd64"
    assert by_name["debian"]["version"] == "sha256:" + "c" * 64 and by_name["debian"]["type"] == "container"
    # the provenance: an in-toto statement about this digest, with the Dockerfile, base, lock and profile
    [(layer, data)] = _layers(fake, f"{tag}.att")
    envelope = json.loads(data)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"] == [{"name": "localhost:5000/sb/alpaca-lora", "digest": {"sha256": digest[7:]}}]
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    definition = statement["predicate"]["buildDefinition"]
    roles = {(d.get("annotations") or {}).get("role") or d.get("name"): d for d in definition["resolvedDependencies"]}
    assert roles["base image"]["digest"] == {"sha256": "c" * 64}
    assert roles["lock"]["uri"] == "file:alpaca-lora@2026.11-cpu.txt" and len(roles["lock"]["digest"]["sha256"]) == 64
    assert "gitCommit" in roles["profile"]["digest"] or "sha256" in roles["profile"]["digest"]
    context = __import__("builder.render.dockerfile", fromlist=["prepare"]).prepare("alpaca-lora", "2026.11", "cpu", ())
    import hashlib
    assert statement["predicate"]["runDetails"]["byproducts"] == [
        {"name": "Dockerfile", "digest": {"sha256": hashlib.sha256(context.dockerfile.encode()).hexdigest()}}]
    assert envelope["signatures"] and envelope["payloadType"] == "application/vnd.in-toto+json"


def test_pull_with_the_signers_key_takes_exactly_the_signed_digest(pushed, fake, keys, cli, monkeypatch):
    ref, digest, _ = pushed
    _forget_local(fake, ref)
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", keys["good"][1])
    code, out, err = cli("pull", *SPEC)
    assert code == 0, err
    assert fake.pulls == [f"{ref.repository}@{digest}"]  # by digest: what was verified is what is pulled
    assert ref.immutable in fake.images and ref.moving in fake.images
    assert out.endswith("(labels match the profile, signed)\n")


def test_pull_refuses_another_keys_signature_and_leaves_nothing(pushed, fake, keys, cli, monkeypatch):
    ref, digest, _ = pushed
    _forget_local(fake, ref)
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", keys["other"][1])
    code, _, err = cli("pull", *SPEC)
    assert code == 12
    assert f"error: {ref.immutable} ({digest}) is not signed by a trusted key" in err
    assert "It was refused and nothing was pulled" in err
    assert fake.pulls == [] and not [n for n in fake.images if n.startswith(REGISTRY)]


def test_pull_refuses_an_unsigned_image(cli, fake, monkeypatch, keys):
    monkeypatch.setenv("STACKBUILD_REGISTRY", REGISTRY)
    assert cli("build", *SPEC, "--no-pull")[0] == 0
    code, _, err = cli("push", *SPEC)  # no signing key: attached, unsigned
    assert code == 0 and "warning: no signing_key is set: the image is pushed unsigned" in err
    ref, _ = _ref_and_plan()
    _forget_local(fake, ref)
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", keys["good"][1])
    code, _, err = cli("pull", *SPEC)
    assert code == 12 and f"error: {ref.immutable} (sha256:" in err and ") is not signed: no sha256-" in err
    assert fake.pulls == [] and not [n for n in fake.images if n.startswith(REGISTRY)]


def test_pull_refuses_other_content_pushed_under_the_signed_tag_with_the_same_labels(pushed, fake, keys, cli,
                                                                                     monkeypatch):
    ref, digest, _ = pushed
    labels = dict(fake.images[ref.immutable]["Config"]["Labels"])
    _forget_local(fake, ref)
    # someone with push access replaces the content tag: same labels, other content (another digest)
    labels["org.example.extra"] = "1"
    other = fake.oci.put_image(PATH, ref.content_tag, labels)
    assert other != digest
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", keys["good"][1])
    code, _, err = cli("pull", *SPEC)
    assert code == 12 and f"({other}) is not signed: no {other.replace(':', '-')}.sig beside it" in err
    assert fake.pulls == []


def test_pull_or_build_refuses_an_unverified_prebuilt_image_rather_than_building(pushed, fake, keys, cli,
                                                                                  monkeypatch):
    ref, _, _ = pushed
    _forget_local(fake, ref)
    fake.images.clear()
    builds = len(fake.builds)
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", keys["other"][1])
    code, _, err = cli("build", *SPEC)
    assert code == 12 and "is not signed by a trusted key" in err and "--no-pull" in err
    assert len(fake.builds) == builds and fake.pulls == []
    # with the signer's key it takes the prebuilt image, and builds nothing
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", f"{keys['other'][1]},{keys['good'][1]}")
    code, out, err = cli("build", *SPEC)
    assert code == 0, err
    assert len(fake.builds) == builds and len(fake.pulls) == 1


def test_keys_that_cannot_be_used_are_setting_errors(cli, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("STACKBUILD_REGISTRY", REGISTRY)
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", str(tmp_path / "missing.pub"))
    code, _, err = cli("pull", *SPEC)
    assert code == 6 and "verify_keys: " in err and "missing.pub is not a file" in err
    (tmp_path / "junk.pub").write_text("not a key\n")
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", str(tmp_path / "junk.pub"))
    code, _, err = cli("pull", *SPEC)
    assert code == 6 and "junk.pub is not a PEM public key" in err
    monkeypatch.delenv("STACKBUILD_VERIFY_KEYS")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.key").write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    monkeypatch.setenv("STACKBUILD_SIGNING_KEY", str(tmp_path / "rsa.key"))
    assert cli("build", *SPEC, "--no-pull")[0] == 0
    code, _, err = cli("push", *SPEC)
    assert code == 6 and "rsa.key is not an EC P-256 key" in err
    assert fake.pushes == []  # a bad key fails before anything is pushed


def test_inspect_shows_what_push_attached(pushed, fake, keys, cli, monkeypatch):
    ref, digest, _ = pushed
    fake.images[ref.immutable]["RepoDigests"] = [f"{ref.repository}@{digest}"]
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", keys["good"][1])
    code, out, err = cli("inspect", *SPEC)
    assert code == 0, err
    assert f"{ref.repository}@{digest}" in out
    assert f"signatures: 1, verified by {keys['good'][1]}" in out
    assert "sbom: CycloneDX 1.6, 3 components" in out
    assert f"provenance: https://slsa.dev/provenance/v1 (signed, verified by {keys['good'][1]})" in out
    assert "base image: docker:debian:bookworm-slim sha256:" + "c" * 64 in out
    assert "Dockerfile: sha256:" in out
    info = json.loads(cli("inspect", *SPEC, "--json")[1])
    assert info["attachments"][0]["provenance"]["statement"]["subject"][0]["digest"] == {"sha256": digest[7:]}


def test_sbom_prints_cyclonedx_json(cli, fake, tmp_path, monkeypatch):
    assert cli("build", *SPEC, "--no-pull")[0] == 0
    code, out, err = cli("sbom", *SPEC)
    assert code == 0, err
    document = json.loads(out)
    assert document["specVersion"] == "1.6" and len(document["components"]) == 3
    assert document["metadata"]["component"]["type"] == "container"
    target = tmp_path / "sbom.json"
    assert cli("sbom", *SPEC, "-o", str(target))[0] == 0
    assert json.loads(target.read_text())["components"] == document["components"]
    code, _, err = cli("sbom", *SPEC, "-o", str(tmp_path))
    assert code == 5 and "cannot write" in err


def test_verify_keys_from_the_config_file_is_a_list_of_key_files(cli, fake, tmp_path, keys, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'verify_keys = ["{keys["good"][1]}", "{keys["other"][1]}"]\n')
    code, out, err = cli("--config", str(config), "config", "show", "--json")
    assert code == 0, err
    assert json.loads(out)["verify_keys"] == {"value": f"{keys['good'][1]}, {keys['other'][1]}",
                                              "source": str(config)}
    config.write_text("verify_keys = 3\n")
    code, _, err = cli("--config", str(config), "config", "show")
    assert code == 6 and "verify_keys must be a list of public key files (PEM)" in err


def test_a_signature_tag_that_is_not_a_manifest_is_a_refusal_not_a_traceback(pushed, fake, keys, cli, monkeypatch):
    ref, digest, _ = pushed
    _forget_local(fake, ref)
    fake.oci.manifests[PATH, digest.replace(":", "-") + ".sig"] = ("application/vnd.oci.image.manifest.v1+json",
                                                                   b"\x00 not json")
    monkeypatch.setenv("STACKBUILD_VERIFY_KEYS", keys["good"][1])
    code, _, err = cli("pull", *SPEC)
    assert code == 12 and f"error: {REGISTRY}/alpaca-lora:{digest.replace(':', '-')}.sig is not a JSON manifest" in err
    assert "Traceback" not in err and fake.pulls == []
