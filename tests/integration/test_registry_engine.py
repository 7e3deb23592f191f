"""Prebuilt images through the real engine and the harness's local registry (127.0.0.1:5000).

push -> remove the local image -> pull, and build pulls instead of building (no build step runs);
a registry that does not answer, or an image whose labels say something else, means a warning
and a local build. The probe image shares every layer up to torch with the 2026.11 cpu images,
so only its top layers travel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import replace

import docker.errors
import pytest

from builder.images.build import build_image
from builder.engine.classic import split_ref
from builder.render.dockerfile import prepare

from .conftest import FIXTURES, TEST_LABEL

REGISTRY = "localhost:5000/stackbuild-test"
PROBE = str(FIXTURES / "registryprobe.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, timeout=1800)


def _events(run: subprocess.CompletedProcess) -> list[dict]:
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def _registry_tags(repository: str) -> list[str]:
    path = repository.split("/", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:5000/v2/{path}/tags/list", timeout=10) as answer:
        return json.load(answer).get("tags") or []


def _remove(docker_client, image_id: str) -> None:
    try:
        docker_client.images.remove(image_id, force=True)
    except docker.errors.ImageNotFound:
        pass


@pytest.fixture(scope="module")
def probe(stack_images, settings, docker_client):
    """The probe image, built here (never pulled) under the test registry's names."""
    stack_images("alpaca-lora", "2026.11")  # its shared layers come from the cache
    result = build_image(prepare(PROBE, None, "cpu", ()), replace(settings, registry=REGISTRY), use_registry=False,
                         extra_labels={TEST_LABEL: "1"})
    assert result.source in ("built", "local")
    yield result
    # what the tests pulled or built through the CLI, under any of the registries they named
    for repository in (f"{REGISTRY}/registryprobe", "127.0.0.1:1/stackbuild-test/registryprobe",
                       "localhost:5000/stackbuild-test-mislabelled/registryprobe"):
        for image in docker_client.images.list(name=repository):
            _remove(docker_client, image.id)


def test_push_remove_then_pull_and_build_take_the_prebuilt_image(probe, docker_client):
    pushed = _events(_cli("push", PROBE, "-t", "cpu", "--registry", REGISTRY, "--json"))
    result = pushed[-1]
    assert [p["name"] for p in result["pushed"]] == [probe.ref.immutable, probe.ref.moving]
    assert all(p["digest"].startswith("sha256:") for p in result["pushed"])
    assert any(e["event"] == "layer" for e in pushed)
    assert {split_ref(probe.ref.immutable)[1], split_ref(probe.ref.moving)[1]} <= set(_registry_tags(probe.ref.repository))

    _remove(docker_client, probe.image_id)
    pulled = _events(_cli("pull", PROBE, "-t", "cpu", "--registry", REGISTRY, "--json"))
    assert pulled[-1]["content_tag"] == probe.ref.immutable and pulled[-1]["id"] == probe.image_id
    layers = [e for e in pulled if e["event"] == "layer"]
    assert layers and {e["text"] for e in layers} & {"Already exists", "Pull complete"}

    _remove(docker_client, probe.image_id)
    built = _events(_cli("build", PROBE, "-t", "cpu", "--registry", REGISTRY, "--json"))
    assert not [e for e in built if e["event"] in ("step", "cached")], "a build step ran instead of the pull"
    assert built[-1]["source"] == "pulled" and built[-1]["id"] == probe.image_id and built[-1]["steps"] == 0
    image = docker_client.images.get(probe.image_id)
    assert {probe.ref.immutable, probe.ref.moving} <= set(image.tags)
    assert image.labels["io.stackbuild.content-hash"] == probe.ref.content_hash

    inspected = json.loads(_cli("inspect", PROBE, "-t", "cpu", "--registry", REGISTRY, "--json").stdout)
    assert inspected["stack"] == "registryprobe" and inspected["pins"]["six"] == "1.16.0"
    assert inspected["content_hash"] == probe.ref.content_hash and inspected["matches_profile"] is True


def test_a_registry_that_does_not_answer_means_a_warning_and_a_local_build(probe, docker_client):
    _remove(docker_client, probe.image_id)
    run = _cli("build", PROBE, "-t", "cpu", "--registry", "127.0.0.1:1/stackbuild-test", "--json")
    events = _events(run)
    assert "warning: cannot pull 127.0.0.1:1/stackbuild-test/registryprobe:2026.11-cpu-" in run.stderr
    assert "building it here instead" in run.stderr
    assert events[-1]["source"] == "built" and any(e["event"] == "step" for e in events)


def test_a_prebuilt_image_with_other_labels_is_not_used(probe, docker_client):
    other = "localhost:5000/stackbuild-test-mislabelled"
    impostor = f"{other}/registryprobe:{probe.ref.content_tag}"
    docker_client.images.get("debian:bookworm-slim").tag(impostor)
    for line in docker_client.api.push(*split_ref(impostor), stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(impostor)
    run = _cli("build", PROBE, "-t", "cpu", "--registry", other, "--json")
    events = _events(run)
    assert f"warning: {impostor} from the registry is not what the local profile describes" in run.stderr
    assert "io.stackbuild.stack is missing, the local profile says 'registryprobe'" in run.stderr
    assert events[-1]["source"] == "built" and events[-1]["content_tag"] == impostor
    assert events[-1]["id"] != docker_client.images.get("debian:bookworm-slim").id
