"""Real builds: every buildable cpu release, cache hits, shared layers, labels, failure paths."""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import replace

import pytest

from builder.engine import connect as engines
from builder.images.build import build_context, build_image, build_options
from builder.config import load_settings
from builder.engine.api import BuildLog
from builder.errors import BuildError
from builder.plan import labels as schema
from builder.plan.build_plan import plan_build
from builder.profile.load import available_stacks, load_stack
from builder.render.dockerfile import prepare

from .conftest import ENGINES, FIXTURES, TEST_LABEL, engine_of, github_reachable, unique

RELEASES = [(name, rel) for name in available_stacks() for rel in load_stack(name).releases]
GIT_ONLY = {(name, rel) for name, rel in RELEASES
            if any(p.pin.is_git for p in load_stack(name).releases[rel].packages)}


@pytest.mark.parametrize(("stack", "release"), RELEASES, ids=[f"{s}@{r}" for s, r in RELEASES])
def test_every_cpu_release_builds_with_its_labels(stack, release, stack_images, docker_client):
    if (stack, release) in GIT_ONLY and not github_reachable():
        pytest.skip(f"{stack}@{release} pins packages to GitHub commits and github.com is unreachable here; "
                    "its Dockerfile is rendered, golden-tested and linted, and it is built where GitHub is reachable")
    result = stack_images(stack, release)
    image = docker_client.images.get(result.image_id)
    labels = image.labels
    plan = plan_build(load_stack(stack), release, "cpu")
    assert labels["io.stackbuild.stack"] == stack and labels["io.stackbuild.release"] == release
    assert labels["io.stackbuild.target"] == "cpu"
    assert labels["io.stackbuild.content-hash"] == result.ref.content_hash
    assert json.loads(labels["io.stackbuild.pins"]) == plan.pins
    assert labels["org.opencontainers.image.version"] == f"{release}-cpu"
    assert set(image.tags) >= {result.ref.moving, result.ref.immutable}
    manifest = docker_client.containers.run(
        result.image_id, ["cat", "/opt/stackbuild/manifest.json"], network_mode="none", remove=True,
        labels={TEST_LABEL: "1"})
    assert json.loads(manifest) == plan.manifest()


def test_rebuild_with_nothing_changed_reuses_the_image(stack_images, settings):
    first = stack_images("alpaca-lora", "2026.11")
    again = build_image(prepare("alpaca-lora", "2026.11", "cpu", ()), settings)
    assert again.ref == first.ref and again.image_id == first.image_id
    assert again.source == "local" and again.steps == 0


def test_the_same_steps_under_another_name_are_all_cache_hits(stack_images, settings, docker_client):
    """The layer cache, beneath the content tag: the same Dockerfile builds from the cache alone."""
    first = stack_images("alpaca-lora", "2026.11")
    labels = {k: v for k, v in docker_client.images.get(first.image_id).labels.items() if k in schema.BUILT}
    context = prepare("alpaca-lora", "2026.11", "cpu", ())
    tag, log, cached = f"stackbuild-test/{unique('cachehit')}:latest", BuildLog(), []
    engine = engines.connect(kind=engine_of("2026.11"))  # the engine whose cache built it
    assert engine.dialect.site_secret is not None  # BuildKit's
    try:
        image_id = build_context(engine, context, tag, labels, build_options(settings), log,
                                 lambda event: cached.append(event) if event.kind == "cached" else None)
        assert image_id == first.image_id and len(cached) >= log.total - 1  # the classic builder never caches FROM
    finally:
        engine.close()
        docker_client.images.remove(tag)


def _layers(client, image_id):
    return client.images.get(image_id).attrs["RootFS"]["Layers"]


@pytest.mark.parametrize("group", [
    [("alpaca-lora", "2023.04"), ("qlora", "2023.07"), ("flash-attn-fsdp", "2023.06"),
     ("deepspeed-zero3-offload", "2023.06")],
    [("alpaca-lora", "2026.11"), ("qlora", "2026.11"), ("flash-attn-fsdp", "2026.11"),
     ("deepspeed-zero3-offload", "2026.11")],
], ids=["era", "current"])
def test_same_base_python_and_torch_share_layers_byte_for_byte(group, stack_images, docker_client):
    layers = [_layers(docker_client, stack_images(*member).image_id) for member in group]
    # base, site.sh, OS packages, the bootstrap lock, Python, the torch lock, torch: the first seven
    # layers are the same blobs (the era releases' dates differ, but torch is locked as of its own release;
    # deepspeed's libaio-dev comes after torch), so all four stacks of a family store torch once
    for other in layers[1:]:
        assert other[:7] == layers[0][:7]
        assert other[7:] != layers[0][7:]


class _IndexThatWantsAToken(http.server.BaseHTTPRequestHandler):
    """An extra package index that records the Authorization headers it is sent, and serves nothing."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).seen.append(self.headers.get("Authorization", ""))
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("kind", ENGINES)
def test_credentials_never_reach_a_layer_or_the_history(kind, own_build_cache, docker_client, test_image, monkeypatch,
                                                         stack_images):
    stack_images("alpaca-lora", "2026.11")  # the shared layers come from the cache
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IndexThatWantsAToken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "FAKETOKEN" + os.urandom(6).hex()
    monkeypatch.setenv("STACKBUILD_PIP_EXTRA_INDEX_URL", f"http://probe:{token}@127.0.0.1:{server.server_port}/simple")
    monkeypatch.setenv("STACKBUILD_BUILD_NETWORK", "host")
    monkeypatch.setenv("STACKBUILD_ENGINE", kind)
    _IndexThatWantsAToken.seen = []
    # the same content built before (the other engine's run, a manual build) would be reused, not built
    for image in docker_client.images.list(filters={"label": "io.stackbuild.stack=tokenprobe"}):
        docker_client.images.remove(image.id, force=True)
    name = test_image(f"tokenprobe-{kind}")
    try:
        # BuildKit's cache outlives the image: --no-cache, so the step that reads the index runs again
        result = build_image(prepare(str(FIXTURES / "tokenprobe.yaml"), None, "cpu", ()), load_settings(),
                             extra_tags=(name,), extra_labels={TEST_LABEL: "1"}, nocache=kind == "buildkit")
    finally:
        server.shutdown()
    # pip really used the token (basic auth), so the test would see it if it leaked
    assert any(header.startswith("Basic ") for header in _IndexThatWantsAToken.seen)
    history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", name],
                             capture_output=True, text=True, check=True).stdout
    assert token not in history and "site_begin" in history
    image = docker_client.images.get(result.image_id)
    assert token not in json.dumps(image.attrs)
    assert not _tar_contains(docker_client.api.get_image(name), token.encode())


class _ChunkStream(io.RawIOBase):
    """A file object over the byte chunks `docker save` streams."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.pending = b""

    def readable(self):
        return True

    def readinto(self, buffer):
        while not self.pending:
            self.pending = next(self.chunks, b"")
            if not self.pending:
                return 0
        size = min(len(buffer), len(self.pending))
        buffer[:size], self.pending = self.pending[:size], self.pending[size:]
        return size


def _tar_contains(chunks, needle: bytes) -> bool:
    """Scan a `docker save` stream, every (uncompressed) layer tar inside it included, for a byte string."""
    outer = tarfile.open(fileobj=io.BufferedReader(_ChunkStream(chunks), 1 << 20), mode="r|")
    for member in outer:
        data = outer.extractfile(member)
        tail = b""
        while data is not None:
            block = data.read(1 << 20)
            if not block:
                break
            if needle in tail + block:
                return True
            tail = block[-len(needle):]
    return False


def _containers(client):
    return {c.id for c in client.containers.list(all=True)}


@pytest.mark.parametrize("kind", ENGINES)
def test_a_failing_pin_names_the_step_and_pips_error(kind, docker_client, test_image, settings, stack_images):
    stack_images("alpaca-lora", "2026.11")
    before = _containers(docker_client)
    with pytest.raises(BuildError) as info:
        build_image(prepare(str(FIXTURES / "impossible.yaml"), None, "cpu", ()), replace(settings, engine=kind),
                    extra_tags=(test_image("impossible"),), extra_labels={TEST_LABEL: "1"})
    error = info.value
    assert error.exit_status == 1 and error.instruction.startswith("RUN . /opt/stackbuild/site.sh")
    assert any("No matching distribution found for peft==99.0.0" in line for line in error.tail)
    text = str(error)
    assert text.startswith(f"step {error.step}/{error.total} failed (exit code 1): RUN")
    assert "peft==99.0.0" in open(error.log_path).read()
    assert _containers(docker_client) == before


@pytest.mark.parametrize("kind", ENGINES)
def test_the_cli_reports_a_failed_build_with_its_exit_code(kind, stack_images):
    stack_images("alpaca-lora", "2026.11")
    run = subprocess.run([sys.executable, "-m", "builder", "build", str(FIXTURES / "impossible.yaml"), "-t", "cpu",
                          "-q", "--engine", kind], capture_output=True, text=True)
    assert run.returncode == 8, run.stderr
    assert "No matching distribution found for peft==99.0.0" in run.stderr and "Traceback" not in run.stderr
    assert "doctor: pin-not-found" in run.stderr  # the failure diagnosed, as `stackbuild doctor LOG` would


def _buildx_processes() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if b"buildx\0build\0" in handle.read():
                    found.add(int(entry))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.parametrize("kind", ENGINES)
def test_an_interrupted_build_leaves_no_container(kind, own_build_cache, docker_client, stack_images):
    stack_images("alpaca-lora", "2026.11")
    # a run that was not interrupted in time (SIGINT ignored) leaves the slow step cached: drop it
    for image in docker_client.images.list(filters={"label": "io.stackbuild.stack=slowstep"}):
        docker_client.images.remove(image.id, force=True)
    before, builds_before = _containers(docker_client), _buildx_processes()
    # Ctrl-C's SIGINT as a terminal delivers it, even where this run inherited SIGINT ignored (a
    # background job of a non-interactive shell): then Python would install no KeyboardInterrupt.
    # BuildKit keeps its own cache of the slow step: --no-cache makes it run again.
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", str(FIXTURES / "slowstep.yaml"), "-t", "cpu",
                             "--engine", kind, *(["--no-cache"] if kind == "buildkit" else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if kind == "classic":
        # wait until a RUN step is executing in a build container, then interrupt like Ctrl-C
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _containers(docker_client) == before:
            time.sleep(0.2)
        assert _containers(docker_client) != before, "no build container appeared"
    else:
        # BuildKit runs steps in its own containers (not the engine's): wait for the apt step to start
        for line in proc.stdout:
            if "RUN . /opt/stackbuild/site.sh" in line:
                break
        assert _buildx_processes() - builds_before, "no docker buildx build is running"
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "error: interrupted" in err
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _buildx_processes() - builds_before:
        time.sleep(0.5)
    assert not _buildx_processes() - builds_before, "docker buildx build outlived the interrupted build"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _containers(docker_client) != before:
        time.sleep(0.5)
    assert _containers(docker_client) == before
