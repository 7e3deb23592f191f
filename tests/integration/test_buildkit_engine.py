"""The BuildKit engine on real engines: secrets, the registry cache and zstd layers.

Small Dockerfiles on the stand-in base, built through BuildxEngine itself. The host's engine
(bookworm's dockerd 20.10, BuildKit v0.8) takes secrets and keeps its cache inline; the second
engine that .ci/run starts (.ci/engine26.sh: dockerd 26 on containerd's image store, at
$STACKBUILD_TEST_ENGINE26) exports a registry cache and keeps zstd layers. Without that engine
these tests are skipped locally and fail in CI. Only engine26's build cache is ever pruned here:
the host engine's BuildKit cache is the stack images' layer cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.request

import pytest

from builder.engine.buildkit import BuildxEngine
from builder.engine.api import BuildLog, BuildOptions, BuildRequest
from builder.engine.site_server import payload as site_payload
from builder.errors import BuildError, RegistryError

from .conftest import TEST_LABEL, unique

REGISTRY = "localhost:5000"
SECRET = "s3cr3t-" + os.urandom(6).hex()
# A site setting: the engine hands it to the build as its dialect's secret, in site.sh's format.
PAYLOAD = site_payload({"PROBE": SECRET})
SITE = BuildxEngine.dialect.site_secret
# The step fails unless the secret is there (compared by its hash: the Dockerfile is in the history);
# it writes only its length, never the secret.
CHECKS_SECRET = ('FROM debian:bookworm-slim\n'
                 f'RUN --mount=type=secret,id={SITE} test "$(sha256sum < /run/secrets/{SITE} | cut -d" " -f1)" = '
                 f'"{hashlib.sha256(PAYLOAD).hexdigest()}" && wc -c < /run/secrets/{SITE} > /secret-length\n'
                 'RUN echo {salt} > /salt && sleep 1\n')


def _engine(host: str | None) -> BuildxEngine:
    previous = os.environ.get("DOCKER_HOST")
    if host:
        os.environ["DOCKER_HOST"] = host
    try:
        return BuildxEngine.connect(timeout=300)
    finally:
        if host:
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous


@pytest.fixture(scope="module")
def engine26(buildx_available):
    host = os.environ.get("STACKBUILD_TEST_ENGINE26")
    if not host:
        message = "no second engine on containerd's image store (STACKBUILD_TEST_ENGINE26; .ci/engine26.sh starts one)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must start it: .ci/run runs .ci/engine26.sh)")
        pytest.skip(message)
    engine = _engine(host)
    assert engine.containerd_store(), f"{host} does not keep images in containerd's store"
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def host_engine(buildx_available):
    engine = _engine(None)
    yield engine
    engine.close()


def _docker(engine: BuildxEngine, *args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                          env=dict(os.environ, DOCKER_HOST=engine.address)).stdout


def _build(engine, dockerfile, tag, **kwargs):
    log, events = BuildLog(), []
    options = BuildOptions(network="host", site={"PROBE": SECRET}, **kwargs)
    image_id = engine.build(BuildRequest(dockerfile, (), tag, {TEST_LABEL: "1"}, options), log, events.append)
    return image_id, log, events


def _manifest(repository: str, tag: str) -> dict:
    accept = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json"])
    request = urllib.request.Request(f"http://127.0.0.1:5000/v2/{repository}/manifests/{tag}",
                                     headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        manifest = json.load(response)
    if "manifests" in manifest:  # an index: its image manifest
        image = next(m for m in manifest["manifests"] if (m.get("platform") or {}).get("os") == "linux")
        return _manifest(repository, image["digest"])
    return manifest


def _remove(engine: BuildxEngine, *refs: str) -> None:
    for ref in refs:
        engine.untag(ref)


def test_a_secret_reaches_its_step_and_nothing_else(host_engine):
    tag = f"stackbuild-test/{unique('secret')}:latest"
    try:
        image_id, log, events = _build(host_engine, CHECKS_SECRET.format(salt=unique("s")), tag)
        assert [e.step for e in events if e.kind == "step"] == [1, 2, 3]
        history = _docker(host_engine, "history", "--no-trunc", "--format", "{{.CreatedBy}}", tag)
        encoded = PAYLOAD.decode().split()[1]  # base64, as site.sh reads it
        assert SECRET not in history and SECRET not in "\n".join(log.lines) and encoded not in history
        assert SECRET not in json.dumps(host_engine.image(image_id)) and encoded not in "\n".join(log.lines)
        assert _docker(host_engine, "run", "--rm", "--network", "none", "--label", f"{TEST_LABEL}=1", tag,
                       "cat", "/secret-length").strip() == str(len(PAYLOAD))
    finally:
        _remove(host_engine, tag)


def test_a_failing_step_is_named_with_its_exit_code(host_engine):
    tag = f"stackbuild-test/{unique('fails')}:latest"
    with pytest.raises(BuildError) as info:
        _build(host_engine, "FROM debian:bookworm-slim\nRUN echo about to fail && exit 7\n", tag)
    error = info.value
    assert (error.step, error.total, error.exit_status) == (2, 2, 7)
    assert error.instruction == "RUN echo about to fail && exit 7"


def test_pruning_build_cache_takes_the_picked_records_leaves_first_and_nothing_else(host_engine):
    """A removed image's build steps stay as cache records; the engine prunes the ones picked, a child
    before its parent (BuildKit refuses a parent first), and leaves every other record alone."""
    mark = unique("prune-me")
    tag = f"stackbuild-test/{unique('pruned')}:latest"
    _build(host_engine, f"FROM debian:bookworm-slim\nRUN echo {mark} > /a\nRUN echo {mark} > /b\n", tag)
    _remove(host_engine, tag)

    def picked(record: dict) -> bool:
        return mark in (record.get("Description") or "")

    before = host_engine.build_cache()
    mine = [r for r in before if picked(r)]
    # the second step's record has the first's as its parent: one round cannot take both
    assert len(mine) == 2 and any(r.get("Parent") in {m["ID"] for m in mine} for r in mine), mine
    assert host_engine.prune_build_cache(picked) == []
    after = {r["ID"] for r in host_engine.build_cache()}
    assert not {r["ID"] for r in mine} & after
    assert {r["ID"] for r in before if not picked(r)} - after == set()


def _cache_layer_types(repository: str, tag: str) -> set[str]:
    """The media types of a registry cache's layer blobs (its index lists them beside its config)."""
    request = urllib.request.Request(f"http://127.0.0.1:5000/v2/{repository}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        index = json.load(response)
    return {m["mediaType"] for m in index["manifests"] if "layer" in m["mediaType"]}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_fresh_engine_rebuilds_from_the_registry_cache_alone(engine26, compression):
    dockerfile = CHECKS_SECRET.format(salt=unique("cache"))
    tag, cache = f"stackbuild-test/{unique('cached')}:latest", f"{REGISTRY}/stackbuild-test-cache:{unique('c')}"
    try:
        _docker(engine26, "builder", "prune", "-af")  # nothing cached from an earlier test's build
        _, _, events = _build(engine26, dockerfile, tag, cache_to=cache, compression=compression)
        assert not any(e.kind == "cached" and e.step > 1 for e in events)
        # the cache's layers are compressed as the image's are
        assert _cache_layer_types("stackbuild-test-cache", cache.rsplit(":", 1)[1]) == {
            "application/vnd.oci.image.layer.v1.tar+zstd" if compression == "zstd"
            else "application/vnd.oci.image.layer.v1.tar+gzip"}
        _remove(engine26, tag)
        _docker(engine26, "builder", "prune", "-af")  # an engine with an empty build cache
        _, log, events = _build(engine26, dockerfile, tag, cache_from=cache)
        assert {2, 3} <= {e.step for e in events if e.kind == "cached"}, log.lines
    finally:
        _remove(engine26, tag)


def test_zstd_layers_are_stored_and_pushed_as_zstd(engine26, host_engine):
    ref = f"{REGISTRY}/stackbuild-test-zstd:{unique('z')}"
    try:
        _build(engine26, CHECKS_SECRET.format(salt=unique("z")), ref, compression="zstd")
        engine26.push(ref)
        layers = _manifest("stackbuild-test-zstd", ref.rsplit(":", 1)[1])["layers"]
        assert layers and all(layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd" for layer in layers)
        _remove(engine26, ref)
        _docker(engine26, "image", "prune", "-af", "--filter", f"label={TEST_LABEL}")
        engine26.pull(ref)  # an engine pulls back what it pushed (Docker's zstd type it could not unpack)
        assert engine26.image(ref) is not None
        # the host's engine: bookworm's dockerd 20.10 cannot unpack zstd and is told why; 23+ pulls it
        if int(host_engine.version().split(".")[0]) < 23:
            with pytest.raises(RegistryError) as info:
                host_engine.pull(ref)
            assert info.value.reason == "zstd" and "Docker 23 or later pulls them" in str(info.value)
        else:
            host_engine.pull(ref)
    finally:
        _remove(engine26, ref)
        _remove(host_engine, ref)
    with pytest.raises(BuildError, match="zstd layers need an engine on containerd's image store"):
        _build(host_engine, "FROM debian:bookworm-slim\n", f"stackbuild-test/{unique('nozstd')}:latest",
               compression="zstd")
