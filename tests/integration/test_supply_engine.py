"""Supply chain through the real engine, the harness's local registry (127.0.0.1:5000) and an independent
verifier: Debian trixie's skopeo 1.18 (containers/image) in a container built FROM debian:trixie-slim.

push of a current cpu image attaches a signature, an SBOM and a provenance statement; skopeo with a
signature-requiring policy copies it and refuses a copy whose signature another key made; pull
refuses an unsigned image and an image re-pushed with the same labels but other content, leaving
nothing behind; the SBOM of each current cpu image lists exactly what `pip list` and `dpkg -l` show.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import docker.errors
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from builder.profile.load import available_stacks, load_stack
from builder.render.dockerfile import prepare
from builder.supply.sbom import normalise

from .conftest import TEST_LABEL, unique

REGISTRY = "localhost:5000/stackbuild-test-supply"  # skopeo compares host names literally: always localhost
STACK, RELEASE = "alpaca-lora", "2026.11"
SPEC = (f"{STACK}@{RELEASE}", "-t", "cpu")
SKOPEO_DOCKERFILE = ("FROM debian:trixie-slim\n"
                     "RUN apt-get update && apt-get install -y --no-install-recommends skopeo "
                     "&& rm -rf /var/lib/apt/lists/*\n")


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("STACKBUILD_SIGNING_KEY", "STACKBUILD_VERIFY_KEYS")}
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, timeout=1800,
                          env={**environment, **env})


def _tags(repository: str) -> list[str]:
    path = repository.split("/", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:5000/v2/{path}/tags/list", timeout=10) as answer:
        return json.load(answer).get("tags") or []


def _key(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {"good": _key(folder, "good"), "other": _key(folder, "other")}


def _drop(docker_client, repository: str) -> None:
    for image in docker_client.images.list(name=repository):
        for tag in image.tags:
            if tag.startswith(repository + ":"):
                docker_client.images.remove(tag, noprune=False)


@pytest.fixture(scope="module")
def pushed(stack_images, docker_client, keys):
    """The current alpaca-lora cpu image pushed with `stackbuild push`, signed with the good key."""
    built = stack_images(STACK, RELEASE)
    run = _cli("push", *SPEC, "--registry", REGISTRY, "--json", STACKBUILD_SIGNING_KEY=str(keys["good"][0]))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    yield built, result
    for repository in (f"{REGISTRY}/{STACK}", f"{REGISTRY}-unsigned/{STACK}"):
        _drop(docker_client, repository)


@pytest.fixture(scope="session")
def skopeo(docker_client):
    """Debian trixie's skopeo in a container image built here once a run (apt over host networking)."""
    tag = f"stackbuild-test/{unique('skopeo')}:trixie"
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(SKOPEO_DOCKERFILE)
        docker_client.images.build(path=context, tag=tag, network_mode="host", labels={TEST_LABEL: "1"},
                                   forcerm=True)
    yield tag
    try:
        docker_client.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


def _skopeo_copy(docker_client, skopeo: str, public_key: Path, source: str, destination: str) -> tuple[int, str]:
    """skopeo copy under a policy that takes only images signed by ``public_key`` for this repository."""
    repository = source.split("//", 1)[1].rsplit(":", 1)[0]
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "key.pub").write_bytes(public_key.read_bytes())
        Path(folder, "policy.json").write_text(json.dumps({
            "default": [{"type": "reject"}],
            "transports": {"docker": {repository: [{"type": "sigstoreSigned", "keyPath": "/sk/key.pub",
                                                    "signedIdentity": {"type": "matchRepository"}}]}}}))
        Path(folder, "registries.d").mkdir()
        Path(folder, "registries.d", "local.yaml").write_text("docker:\n  localhost:5000:\n"
                                                              "    use-sigstore-attachments: true\n")
        os.chmod(folder, 0o755)
        container = docker_client.containers.run(
            skopeo, ["skopeo", "--policy", "/sk/policy.json", "--registries.d", "/sk/registries.d", "copy",
                     "--src-tls-verify=false", "--dest-tls-verify=false", source, destination],
            network_mode="host", volumes={folder: {"bind": "/sk", "mode": "ro"}}, labels={TEST_LABEL: "1"},
            detach=True)
        try:
            status = container.wait(timeout=900)["StatusCode"]
            return status, container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)


def test_push_attaches_a_signature_an_sbom_and_a_provenance_statement(pushed, keys):
    built, result = pushed
    digest = result["pushed"][0]["digest"]
    tag = digest.replace(":", "-")
    assert result["attached"] == {"sbom": f"{tag}.sbom", "provenance": f"{tag}.att", "signature": f"{tag}.sig"}
    assert {f"{tag}.sig", f"{tag}.sbom", f"{tag}.att", built.ref.content_tag} <= set(_tags(f"{REGISTRY}/{STACK}"))
    inspected = _cli("inspect", *SPEC, "--registry", REGISTRY, "--json", STACKBUILD_VERIFY_KEYS=str(keys["good"][1]))
    assert inspected.returncode == 0, inspected.stderr
    [entry] = [a for a in json.loads(inspected.stdout)["attachments"] if a["repository"] == f"{REGISTRY}/{STACK}"]
    # earlier runs of this test, whose keys are gone, may have signed the same digest too
    assert entry["digest"] == digest and entry["signatures"] >= 1 and entry["verified_by"] == [str(keys["good"][1])]
    assert entry["sbom"]["format"] == "CycloneDX 1.6" and entry["sbom"]["components"] > 200
    statement = entry["provenance"]["statement"]
    assert entry["provenance"]["verified_by"] == str(keys["good"][1])
    assert statement["subject"] == [{"name": f"{REGISTRY}/{STACK}", "digest": {"sha256": digest[7:]}}]
    dockerfile = prepare(STACK, RELEASE, "cpu", ()).dockerfile
    assert statement["predicate"]["runDetails"]["byproducts"][0]["digest"]["sha256"] == hashlib.sha256(
        dockerfile.encode()).hexdigest()
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    base = next(d for d in dependencies if (d.get("annotations") or {}).get("role") == "base image")
    assert base["uri"] == "docker:debian:bookworm-slim" and len(base["digest"]["sha256"]) == 64


def test_skopeo_copies_the_signed_image_and_refuses_another_keys_signature(pushed, keys, skopeo, docker_client):
    source = f"docker://{REGISTRY}/{STACK}:{RELEASE}-cpu"
    code, logs = _skopeo_copy(docker_client, skopeo, keys["good"][1], source,
                              f"docker://{REGISTRY}-copy/{STACK}:{unique('ok')}")
    assert code == 0, logs
    assert "Writing manifest to image destination" in logs
    code, logs = _skopeo_copy(docker_client, skopeo, keys["other"][1], source,
                              f"docker://{REGISTRY}-copy/{STACK}:{unique('refused')}")
    assert code != 0
    assert "Source image rejected" in logs and "cryptographic signature verification failed" in logs, logs


def test_pull_takes_the_signed_image_with_the_signers_key(pushed, keys, docker_client):
    built, result = pushed
    _drop(docker_client, f"{REGISTRY}/{STACK}")
    run = _cli("pull", *SPEC, "--registry", REGISTRY, STACKBUILD_VERIFY_KEYS=str(keys["good"][1]))
    assert run.returncode == 0, run.stderr
    assert run.stdout.endswith("(labels match the profile, signed)\n")
    assert docker_client.images.get(f"{REGISTRY}/{STACK}:{built.ref.content_tag}").id == built.image_id


def test_pull_refuses_an_unsigned_image_and_leaves_nothing(pushed, keys, docker_client):
    built, _ = pushed
    unsigned = f"{REGISTRY}-unsigned/{STACK}:{built.ref.content_tag}"
    docker_client.images.get(built.image_id).tag(unsigned)
    for line in docker_client.images.push(unsigned, stream=True, decode=True):
        assert "error" not in line, line
    _drop(docker_client, f"{REGISTRY}-unsigned/{STACK}")
    run = _cli("pull", *SPEC, "--registry", f"{REGISTRY}-unsigned", STACKBUILD_VERIFY_KEYS=str(keys["good"][1]))
    assert run.returncode == 12
    assert f"error: {unsigned} (sha256:" in run.stderr and ") is not signed: no sha256-" in run.stderr
    assert docker_client.images.list(name=f"{REGISTRY}-unsigned/{STACK}") == []


def test_pull_refuses_other_content_pushed_with_the_same_labels(pushed, keys, docker_client, derived_image):
    built, result = pushed
    signed = result["pushed"][0]["digest"]
    name = f"{REGISTRY}/{STACK}:{built.ref.content_tag}"
    # someone who may push replaces the content tag with other content that carries the same labels
    impostor = derived_image(name, ["echo other content > /opt/stackbuild/other"])
    docker_client.images.get(impostor).tag(name)
    pushed_digest = None
    for line in docker_client.images.push(name, stream=True, decode=True):
        assert "error" not in line, line
        pushed_digest = (line.get("aux") or {}).get("Digest") or pushed_digest
    assert pushed_digest and pushed_digest != signed
    impostor_id = docker_client.images.get(impostor).id
    _drop(docker_client, f"{REGISTRY}/{STACK}")
    # its labels alone would pass: what refuses it is the signature
    run = _cli("pull", *SPEC, "--registry", REGISTRY, STACKBUILD_VERIFY_KEYS=str(keys["good"][1]))
    assert run.returncode == 12
    assert f"({pushed_digest}) is not signed: no {pushed_digest.replace(':', '-')}.sig beside it" in run.stderr
    assert docker_client.images.list(name=f"{REGISTRY}/{STACK}") == []
    assert not [i for i in docker_client.images.list() if pushed_digest in str(i.attrs.get("RepoDigests"))]
    unverified = _cli("pull", *SPEC, "--registry", REGISTRY)
    assert unverified.returncode == 0, unverified.stderr  # without verify_keys the labels match: it is taken
    assert docker_client.images.get(name).id == impostor_id
    _drop(docker_client, f"{REGISTRY}/{STACK}")


CURRENT = [(name, load_stack(name).default_release) for name in available_stacks()]


@pytest.mark.parametrize("stack,release", CURRENT, ids=[f"{s}@{r}" for s, r in CURRENT])
def test_the_sbom_lists_every_package_pip_and_dpkg_show(stack, release, stack_images, docker_client):
    image = stack_images(stack, release).ref.immutable
    run = _cli("sbom", image)
    assert run.returncode == 0, run.stderr
    components = json.loads(run.stdout)["components"]
    pypi = {(normalise(c["name"]), c["version"]) for c in components if c["purl"].startswith("pkg:pypi/")}
    deb = {(c["name"], c["version"]) for c in components if c["purl"].startswith("pkg:deb/")}

    def inside(command: list[str]) -> str:
        return docker_client.containers.run(image, command, network_mode="none", remove=True,
                                            labels={TEST_LABEL: "1"}).decode()

    pip = {(normalise(p["name"]), p["version"]) for p in json.loads(inside(["python", "-m", "pip", "list",
                                                                            "--format", "json"]))}
    # installed packages (ii, hi); a removed one whose config files stay (rc) is not software in the image
    rows = [line.split() for line in inside(["dpkg", "-l"]).splitlines() if line[:2] in ("ii", "hi")]
    dpkg = {(row[1].split(":")[0], row[2]) for row in rows}
    assert pip and pip == pypi
    assert dpkg and dpkg == deb, (sorted(dpkg - deb), sorted(deb - dpkg))
    locked = [c for c in components if c["purl"].startswith("pkg:pypi/")]
    assert all(c.get("hashes") for c in locked), [c["name"] for c in locked if not c.get("hashes")]
