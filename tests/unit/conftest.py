"""Unit-test helpers: a fake engine that plays back a scripted build, with a fake registry."""

from __future__ import annotations

import pytest

import json

import builder.engine.connect
import builder.images.oci
from builder.engine.api import BuildEvent, BuildLog, BuildOptions, BuildRequest
from builder.engine.buildkit import BuildxEngine
from builder.engine.classic import DockerEngine, registry_reason, split_ref
from builder.errors import RegistryError

from .fake_registry import FakeRegistry

BASE_DIGEST = "sha256:" + "c" * 64


class FakeEngine:
    """Records calls; plays back a scripted build; keeps images by name and a registry of them.

    ``images`` maps a name to what `docker image inspect` gives (Id and labels); ``registry`` maps a
    pushed name to the same; ``registry_error`` makes every pull and push fail with that text.
    """

    address = "unix:///fake.sock"

    def __init__(self, fail_at: int | None = None, kind: str = "classic"):
        self.kind = kind
        self.fail_at = fail_at
        self.failure_line = "ERROR: No matching distribution found for peft==99.0"
        self.builds: list[dict] = []
        self.tags: list[tuple[str, str]] = []
        self.images: dict[str, dict] = {}
        self.registry: dict[str, dict] = {}
        self.registry_error: str | None = None
        self.pulls: list[str] = []
        self.pushes: list[str] = []
        self.untagged: list[str] = []
        self.oci = None  # a FakeRegistry (tests/unit/fake_registry.py) where pushes also land
        self.containers: dict[str, str] = {}
        self.execs: list[tuple[str, list[str]]] = []
        self.inventory = {"dpkg": [{"name": "bash", "version": "5.2.15-2+b13", "arch": "amd64", "source": "",
                                    "licences": ["GPL-3+"]}],
                          "python": [{"name": "six", "version": "1.16.0", "expression": None, "license": "MIT",
                                      "classifiers": []}],
                          "locks": {"4-packages.txt": "six==1.16.0 \\\n    --hash=sha256:" + "1" * 64 + "\n"},
                          "python_version": "3.11.2"}

    def version(self):
        return "20.10.24"

    def base_identity(self, ref, pull, on_event=None):
        return f"{ref}@{BASE_DIGEST}"

    def local_identity(self, ref):
        return f"{ref}@{BASE_DIGEST}"

    def remote_digest(self, ref):
        return BASE_DIGEST

    def image(self, ref):
        return self.images.get(ref)

    def labels(self, ref):
        return dict(self.images[ref]["Config"]["Labels"] or {})

    def pull(self, ref, on_event=None):
        self.pulls.append(ref)
        if self.registry_error:
            raise RegistryError(f"cannot pull {ref}: {self.registry_error}", registry_reason(self.registry_error))
        if ref not in self.registry:
            raise RegistryError(f"cannot pull {ref}: manifest unknown", "not-found")
        if on_event:
            on_event(BuildEvent("layer", "Pull complete", layer="abc123"))
        self.images[ref] = self.registry[ref]

    def push(self, ref, on_event=None):
        self.pushes.append(ref)
        if self.registry_error:
            raise RegistryError(f"cannot push {ref}: {self.registry_error}", registry_reason(self.registry_error))
        if on_event:
            on_event(BuildEvent("layer", "Pushed", layer="abc123"))
        self.registry[ref] = self.images[ref]
        if self.oci is None:
            return "sha256:" + "e" * 64
        # the manifest goes to the loopback registry too, where signatures and attachments are read
        repository, tag = split_ref(ref)
        digest = self.oci.put_image(repository.split("/", 1)[1], tag, self.images[ref]["Config"]["Labels"])
        self.registry[f"{repository}@{digest}"] = self.images[ref]
        return digest

    # containers: only what the SBOM's inventory needs (one exec of the image's python)
    def start_container(self, image, name, labels, gpus, shm_size=None, **kwargs):
        self.containers[name] = image
        return name

    def exec_lines(self, container, command):
        self.execs.append((self.containers[container], command))
        return iter([json.dumps(self.inventory)]), lambda: 0

    def remove_container(self, container):
        self.containers.pop(container, None)

    def untag(self, ref):
        self.untagged.append(ref)
        self.images.pop(ref, None)

    @property
    def dialect(self):
        """The real engine's of this kind: what it asks render for is the engine's to say."""
        return {"classic": DockerEngine, "buildkit": BuildxEngine}[self.kind].dialect

    def check_options(self, options: BuildOptions) -> None:
        {"classic": DockerEngine, "buildkit": BuildxEngine}[self.kind].check_options(self, options)

    def build(self, request: BuildRequest, log: BuildLog, on_event):
        dockerfile, tag, options = request.dockerfile, request.tag, request.options
        self.builds.append(dict(dockerfile=dockerfile, files=dict(request.files), tag=tag, labels=request.labels,
                                network_mode=options.network, nocache=options.nocache, buildargs=options.buildargs,
                                site=options.site, cache_from=options.cache_from, cache_to=options.cache_to,
                                compression=options.compression))
        steps = [line for line in dockerfile.splitlines() if line.startswith(("FROM", "RUN", "COPY", "ENV", "LABEL"))]
        for n, instruction in enumerate(steps, 1):
            log.record(f"Step {n}/{len(steps)} : {instruction}", on_event)
            if n == self.fail_at:
                log.record(self.failure_line, on_event)
                raise log.step_error("The command '/bin/bash -o pipefail -c pip install' returned a non-zero code: 1")
            log.record(" ---> Using cache" if n > 1 else " ---> abc", on_event)
        image_id = "sha256:" + "d" * 64
        on_event(BuildEvent("done", image_id))
        label_lines = dockerfile[dockerfile.index("LABEL"):] if "LABEL" in dockerfile else ""
        self.images[tag] = {"Id": image_id, "Config": {"Labels": {**_dockerfile_labels(label_lines), **request.labels}}}
        return image_id

    def close(self):
        pass

    def tag(self, image, ref):
        self.tags.append((image, ref))
        found = next((info for info in self.images.values() if info["Id"] == image), None)
        if found is not None:
            self.images[ref] = found


def _dockerfile_labels(text: str) -> dict[str, str]:
    """The LABEL lines a rendered Dockerfile ends with, as the engine would record them."""
    import shlex
    words = shlex.split(text.replace("\\\n", " "))[1:]
    return dict(word.split("=", 1) for word in words if "=" in word)


@pytest.fixture
def oci_registry(monkeypatch):
    """A loopback registry v2 API that builder.images.oci talks to, whatever host an image name gives."""
    served = FakeRegistry()
    monkeypatch.setattr(builder.images.oci.Repository, "base_url",
                        property(lambda self: f"http://127.0.0.1:{served.port}/v2/{self.path}"))
    yield served
    served.close()


@pytest.fixture
def fake(monkeypatch, tmp_path, oci_registry):
    engine = FakeEngine()
    engine.oci = oci_registry
    monkeypatch.setattr(builder.engine.connect, "connect", lambda timeout=600, kind="classic", builder=None: engine)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("REGISTRY", "BUILD_NETWORK", "CA_BUNDLE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "CONFIG",
                 "SIGNING_KEY", "VERIFY_KEYS", "AUDIT_URL"):
        monkeypatch.delenv(f"STACKBUILD_{name}", raising=False)
    return engine


