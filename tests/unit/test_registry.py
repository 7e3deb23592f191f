"""Prebuilt images against a fake engine and registry: pull-or-build, pull, push, inspect, errors."""

from __future__ import annotations

import json

import docker.errors
import pytest

from builder.engine.classic import DockerEngine, registry_reason, split_ref
from builder.engine.api import BuildEvent
from builder.errors import RegistryError, SelectionError
from builder.images.lookup import image_of
from builder.images.registry import expected_labels, label_mismatches, locate
from builder.render.dockerfile import prepare

from .conftest import BASE_DIGEST, FakeEngine

REGISTRY = "localhost:5000/sb"
SPEC = ("alpaca-lora@2026.11", "-t", "cpu")


@pytest.fixture
def registry(monkeypatch, fake):
    monkeypatch.setenv("STACKBUILD_REGISTRY", REGISTRY)
    return fake


def _ref_and_plan():
    from builder.render.identity import image_ref
    context = prepare("alpaca-lora", "2026.11", "cpu", ())
    ref = image_ref(context, f"{context.plan.target.base.ref}@{BASE_DIGEST}", REGISTRY)
    return ref, context.plan


def _publish(fake, labels_patch=None):
    """Put an image of the plan's content tag into the fake registry, labelled as a build would."""
    ref, plan = _ref_and_plan()
    labels = {**expected_labels(plan, ref), **(labels_patch or {})}
    fake.registry[ref.immutable] = {"Id": "sha256:" + "f" * 64, "Config": {"Labels": labels}}
    return ref


def test_build_pulls_a_prebuilt_image_instead_of_building(cli, registry):
    ref = _publish(registry)
    code, out, err = cli("build", *SPEC)
    assert code == 0, err
    assert registry.builds == [] and registry.pulls == [ref.immutable]
    assert registry.images[ref.moving]["Id"] == "sha256:" + "f" * 64
    assert out.rstrip().splitlines()[-1].startswith(f"pulled {ref.immutable} (prebuilt, labels match the profile)")
    assert "layer abc123: Pull complete" in out


def test_build_json_says_where_the_image_came_from(cli, registry):
    _publish(registry)
    code, out, _ = cli("build", *SPEC, "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and events[-1]["source"] == "pulled" and events[-1]["steps"] == 0
    assert {"event": "layer", "text": "Pull complete", "layer": "abc123", "done": 0, "size": 0} in events


def test_a_mislabelled_prebuilt_image_is_removed_and_built_instead(cli, registry):
    ref = _publish(registry, {"io.stackbuild.pins": '{"torch":"1.0"}'})
    code, out, err = cli("build", *SPEC)
    assert code == 0, err
    assert registry.untagged == [ref.immutable] and len(registry.builds) == 1
    assert err.startswith(f"warning: {ref.immutable} from the registry is not what the local profile describes")
    assert "io.stackbuild.pins is '{\"torch\":\"1.0\"}', the local profile says" in err
    assert out.rstrip().splitlines()[-1].startswith("built ")


@pytest.mark.parametrize(("message", "reason"), [
    ('Get "http://localhost:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused', "unreachable"),
    ("unauthorized: authentication required", "denied"),
    ("pull access denied for sb/alpaca-lora, repository does not exist or may require 'docker login'", "denied"),
])
def test_an_unreachable_or_denying_registry_is_a_warning_then_a_build(cli, registry, message, reason):
    registry.registry_error = message
    code, out, err = cli("build", *SPEC)
    assert code == 0, err
    assert registry_reason(message) == reason
    assert err.startswith("warning: cannot pull ") and message in err and err.rstrip().endswith("building it here instead")
    assert len(registry.builds) == 1


def test_no_pull_and_no_cache_never_ask_the_registry(cli, registry):
    _publish(registry)
    assert cli("build", *SPEC, "--no-pull")[0] == 0
    assert cli("build", *SPEC, "--no-cache")[0] == 0
    assert registry.pulls == [] and len(registry.builds) == 2


def test_without_a_registry_nothing_is_pulled(cli, fake):
    assert cli("build", *SPEC)[0] == 0
    assert fake.pulls == [] and len(fake.builds) == 1


def test_an_image_of_this_content_already_here_is_not_built_again(cli, registry):
    assert cli("build", *SPEC, "--no-pull")[0] == 0
    code, out, _ = cli("build", *SPEC)
    assert code == 0 and len(registry.builds) == 1 and registry.pulls == []
    assert out.startswith("localhost:5000/sb/alpaca-lora:2026.11-cpu-") and "up to date: " in out


def test_an_unregistered_build_is_found_once_a_registry_is_set(cli, fake, monkeypatch):
    assert cli("build", *SPEC)[0] == 0  # named stackbuild/alpaca-lora:...
    monkeypatch.setenv("STACKBUILD_REGISTRY", REGISTRY)
    code, out, _ = cli("push", *SPEC)
    ref, _ = _ref_and_plan()
    assert code == 0 and fake.pushes == [ref.immutable, ref.moving]
    assert f"pushing {ref.immutable}\n  layer abc123: Pushed\npushing {ref.moving}\n" in out
    digest = fake.oci.put_image("sb/alpaca-lora", "probe", fake.images[ref.immutable]["Config"]["Labels"])
    assert f"pushed {ref.immutable} ({digest})\npushed {ref.moving} ({digest})\n" in out


def test_push_needs_a_registry_and_a_built_image(cli, fake, registry, monkeypatch):
    code, _, err = cli("push", *SPEC)
    assert code == 4 and "is not built here as localhost:5000/sb/alpaca-lora:2026.11-cpu-" in err
    assert "run `stackbuild build alpaca-lora@2026.11 --target cpu` first" in err
    monkeypatch.delenv("STACKBUILD_REGISTRY")
    code, _, err = cli("push", *SPEC)
    assert code == 6 and err.startswith("error: push needs a registry: pass --registry")
    code, _, err = cli("push", *SPEC, "--registry", "Not A Registry")
    assert code == 6 and "registry 'Not A Registry' is not HOST[:PORT][/PATH]" in err


def test_a_push_error_is_surfaced(cli, registry):
    assert cli("build", *SPEC, "--no-pull")[0] == 0
    registry.registry_error = "denied: requested access to the resource is denied"
    code, _, err = cli("push", *SPEC)
    assert code == 12 and "error: cannot push localhost:5000/sb/alpaca-lora:2026.11-cpu-" in err
    assert err.rstrip().endswith("denied: requested access to the resource is denied")


def test_pull_gets_the_content_tag_and_checks_labels(cli, registry):
    code, _, err = cli("pull", *SPEC)
    assert code == 12 and err.startswith("error: cannot pull localhost:5000/sb/alpaca-lora:2026.11-cpu-")
    assert "manifest unknown" in err
    ref = _publish(registry, {"io.stackbuild.stack": "qlora"})
    code, _, err = cli("pull", *SPEC)
    assert code == 12 and "io.stackbuild.stack is 'qlora', the local profile says 'alpaca-lora'" in err
    assert ref.immutable not in registry.images
    _publish(registry)
    code, out, err = cli("pull", *SPEC)
    assert code == 0, err
    assert out.endswith(f"pulled {ref.immutable} = {ref.moving} (labels match the profile)\n")


def test_inspect_reads_the_labels_back(cli, registry):
    assert cli("build", *SPEC, "--no-pull")[0] == 0
    ref, plan = _ref_and_plan()
    code, out, err = cli("inspect", ref.immutable, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["stack"] == "alpaca-lora" and info["release"] == "2026.11" and info["target"] == "cpu"
    assert info["pins"] == plan.pins and info["fixes"] == [f.issue.id for f in plan.fixes]
    assert info["content_hash"] == ref.content_hash and info["matches_profile"] is True
    code, out, _ = cli("inspect", *SPEC)
    assert code == 0 and f"  content hash: {ref.content_hash}" in out and "matches the local profile: yes" in out
    assert "    torch==2.10.0" in out


def test_inspect_refuses_what_it_cannot_read(cli, registry):
    registry.images["busybox:latest"] = {"Id": "sha256:1", "Config": {"Labels": None}}
    code, _, err = cli("inspect", "busybox:latest")
    assert code == 4 and err == "error: image busybox:latest was not built by stackbuild (it has no io.stackbuild.* labels)\n"
    code, _, err = cli("inspect", "nothing:here")
    assert code == 4 and "image nothing:here is not on this engine (pull or build it first)" in err


def test_label_mismatches_name_each_label():
    ref, plan = _ref_and_plan()
    labels = expected_labels(plan, ref)
    assert label_mismatches(labels, plan, ref) == []
    del labels["io.stackbuild.target"]
    labels["io.stackbuild.content-hash"] = "0" * 64
    assert label_mismatches(labels, plan, ref) == [
        "io.stackbuild.target is missing, the local profile says 'cpu'",
        f"io.stackbuild.content-hash is '{'0' * 64}', the local profile says '{ref.content_hash}'",
    ]


class _Client:
    """A docker.APIClient stand-in whose push and pull stream the chunks given."""

    def __init__(self, chunks=(), exc=None):
        self.chunks, self.exc = list(chunks), exc

    def _stream(self, *args, **kwargs):
        if self.exc:
            raise self.exc
        return iter(self.chunks)

    push = pull = _stream


def test_engine_push_reads_every_chunk_and_raises_on_an_error_chunk():
    chunks = [{"status": "Preparing", "id": "aaa"}, {"status": "Pushing", "id": "aaa",
                                                     "progressDetail": {"current": 5, "total": 10}},
              {"errorDetail": {"message": "blob upload unknown"}, "error": "blob upload unknown"}]
    events: list[BuildEvent] = []
    with pytest.raises(RegistryError) as info:
        DockerEngine(_Client(chunks), "unix:///x").push("localhost:5000/a:b", events.append)
    assert str(info.value) == "cannot push localhost:5000/a:b: blob upload unknown" and info.value.reason == "other"
    assert [(e.kind, e.layer, e.text, e.done, e.size) for e in events] == [
        ("layer", "aaa", "Preparing", 0, 0), ("layer", "aaa", "Pushing", 5, 10)]


def test_engine_push_returns_the_digest_and_needs_one():
    done = [{"status": "Pushed", "id": "aaa"}, {"aux": {"Tag": "b", "Digest": "sha256:9", "Size": 1}}]
    assert DockerEngine(_Client(done), "unix:///x").push("localhost:5000/a:b") == "sha256:9"
    with pytest.raises(RegistryError, match="confirmed no digest"):
        DockerEngine(_Client(done[:1]), "unix:///x").push("localhost:5000/a:b")


def test_engine_push_reads_the_digest_from_the_status_where_the_engine_sends_no_aux():
    # dockerd 26 on the containerd image store, as seen through the SDK here (.ci/engine26.sh)
    digest = "sha256:" + "dd" * 32
    done = [{"status": "Pushed", "id": "aaa"}, {"status": f"b: digest: {digest} size: 972"}]
    assert DockerEngine(_Client(done), "unix:///x").push("localhost:5000/a:b") == digest


def test_engine_pull_turns_an_api_error_into_a_registry_error():
    response = type("R", (), {"status_code": 404, "reason": "Not Found", "url": "x"})()
    exc = docker.errors.APIError("404", response=response, explanation="manifest for a:b not found: manifest unknown")
    with pytest.raises(RegistryError) as info:
        DockerEngine(_Client(exc=exc), "unix:///x").pull("a:b")
    assert info.value.reason == "not-found" and "manifest unknown" in str(info.value)


class _Versioned(_Client):
    def __init__(self, version, chunks):
        super().__init__(chunks)
        self._version = version

    def version(self):
        return {"Version": self._version}


# what dockerd 20.10 streams when a layer is zstd (seen here pulling engine26's zstd push)
ZSTD_ON_20_10 = [{"status": "Pulling fs layer", "id": "aaa"}, {
    "errorDetail": {"message": "failed to register layer: Error processing tar file(exit status 1): "
                               "archive/tar: invalid tar header"},
    "error": "failed to register layer: Error processing tar file(exit status 1): archive/tar: invalid tar header"}]


def test_an_engine_too_old_for_zstd_layers_says_so():
    with pytest.raises(RegistryError) as info:
        DockerEngine(_Versioned("20.10.24+dfsg1", ZSTD_ON_20_10), "unix:///x").pull("localhost:5000/a:b")
    assert info.value.reason == "zstd"
    assert str(info.value) == (
        "cannot pull localhost:5000/a:b: failed to register layer: Error processing tar file(exit status 1): "
        "archive/tar: invalid tar header: this engine, Docker 20.10.24+dfsg1, cannot unpack zstd-compressed "
        "layers, which stackbuild's published images have; Docker 23 or later pulls them")
    # a newer engine failing the same way has another problem: its error stays as it was
    with pytest.raises(RegistryError) as info:
        DockerEngine(_Versioned("26.1.5", ZSTD_ON_20_10), "unix:///x").pull("localhost:5000/a:b")
    assert info.value.reason == "other" and "zstd" not in str(info.value)


def test_split_ref_keeps_a_registry_port():
    assert split_ref("localhost:5000/sb/a:2026.11-cpu") == ("localhost:5000/sb/a", "2026.11-cpu")
    assert split_ref("localhost:5000/sb/a") == ("localhost:5000/sb/a", "latest")


class _BaseNowhere(FakeEngine):
    """An engine without the base image whose registry cannot be asked for its digest."""

    def __init__(self):
        super().__init__()
        self.base_pulls: list[str] = []

    def local_identity(self, ref):
        return None if ref not in self.base_pulls else f"{ref}@{BASE_DIGEST}"

    def remote_digest(self, ref):
        return None

    def base_identity(self, ref, pull, on_event=None):
        self.base_pulls.append(ref)
        return f"{ref}@{BASE_DIGEST}"


def test_locate_goes_only_as_far_for_the_base_as_it_is_told():
    context = prepare("alpaca-lora", "2026.11", "cpu", ())
    engine = _BaseNowhere()
    with pytest.raises(SelectionError, match=r"alpaca-lora@2026.11 \(cpu\) is not built here .*stackbuild build"):
        locate(engine, context, REGISTRY, "known")
    assert engine.base_pulls == []  # "known" never downloads
    found = locate(engine, context, REGISTRY, "fetch")
    assert engine.base_pulls == ["debian:bookworm-slim"] and found.base_here and found.local is None
    assert found.ref == _ref_and_plan()[0] and found.base == f"debian:bookworm-slim@{BASE_DIGEST}"


def test_locate_finds_this_content_here_under_either_name_and_present_pulls_a_missing_base():
    context = prepare("alpaca-lora", "2026.11", "cpu", ())
    engine = FakeEngine()
    ref = locate(engine, context, REGISTRY).ref
    assert locate(engine, context, REGISTRY).local is None
    engine.images[f"stackbuild/alpaca-lora:{ref.content_tag}"] = {"Id": "sha256:1", "Config": {"Labels": {}}}
    assert locate(engine, context, REGISTRY).local == (f"stackbuild/alpaca-lora:{ref.content_tag}", "sha256:1")
    remote_only = FakeEngine()
    remote_only.local_identity = lambda ref: None  # the base is not here, but its registry gives a digest
    pulled: list[str] = []
    remote_only.base_identity = lambda ref, pull, on_event=None: pulled.append(ref) or f"{ref}@{BASE_DIGEST}"
    assert not locate(remote_only, context, REGISTRY, "fetch").base_here and pulled == []
    assert locate(remote_only, context, REGISTRY, "present").base_here and pulled == ["debian:bookworm-slim"]


def test_image_of_takes_an_image_as_given_or_the_stacks_content_tag():
    engine = FakeEngine()
    with pytest.raises(SelectionError, match="image a/b:1 is not on this engine"):
        image_of(engine, "a/b:1", None, [], None)
    engine.images["a/b:1"] = {"Id": "sha256:2", "Config": {"Labels": {}}}
    assert image_of(engine, "a/b:1", None, [], None) == "a/b:1"
    with pytest.raises(SelectionError, match=r"is not here: run `stackbuild build alpaca-lora@2026.11 --target cpu`"):
        image_of(engine, "alpaca-lora@2026.11", "cpu", [], REGISTRY)
    ref = locate(engine, prepare("alpaca-lora", "2026.11", "cpu", ()), REGISTRY).ref
    engine.images[ref.immutable] = {"Id": "sha256:3", "Config": {"Labels": {}}}
    assert image_of(engine, "alpaca-lora@2026.11", "cpu", [], REGISTRY) == ref.immutable
