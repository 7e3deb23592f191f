"""Unit-test helpers: a fake engine that plays back a scripted build."""

from __future__ import annotations

import pytest

import builder.build
from builder.engine import BuildEvent, BuildLog, Engine
from builder.site import SiteServer

BASE_DIGEST = "sha256:" + "c" * 64


class FakeEngine:
    """Records calls; plays back a scripted build."""

    address = "unix:///fake.sock"

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at
        self.failure_line = "ERROR: No matching distribution found for peft==99.0"
        self.builds: list[dict] = []
        self.tags: list[tuple[str, str]] = []

    def base_identity(self, ref, pull, on_event=None):
        return f"{ref}@{BASE_DIGEST}"

    def build(self, dockerfile, files, tag, labels, network_mode, nocache, buildargs, log: BuildLog, on_event):
        self.builds.append(dict(dockerfile=dockerfile, files=dict(files), tag=tag, labels=labels,
                                network_mode=network_mode, nocache=nocache, buildargs=buildargs))
        steps = [line for line in dockerfile.splitlines() if line.startswith(("FROM", "RUN", "COPY", "ENV", "LABEL"))]
        for n, instruction in enumerate(steps, 1):
            Engine._line(f"Step {n}/{len(steps)} : {instruction}", log, on_event)
            if n == self.fail_at:
                Engine._line(self.failure_line, log, on_event)
                raise Engine._step_error(
                    "The command '/bin/bash -o pipefail -c pip install' returned a non-zero code: 1", log)
            Engine._line(" ---> Using cache" if n > 1 else " ---> abc", log, on_event)
        on_event(BuildEvent("done", "sha256:" + "d" * 64))
        return "sha256:" + "d" * 64

    def tag(self, image, ref):
        self.tags.append((image, ref))


@pytest.fixture
def fake(monkeypatch, tmp_path):
    engine = FakeEngine()
    monkeypatch.setattr(builder.build.Engine, "connect", classmethod(lambda cls, timeout=600: engine))
    # a fake build reads nothing from the site server: any free port will do (a real build may hold 47391)
    monkeypatch.setattr(builder.build, "SiteServer", lambda values: SiteServer(values, port=0))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("REGISTRY", "BUILD_NETWORK", "CA_BUNDLE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "CONFIG"):
        monkeypatch.delenv(f"STACKBUILD_{name}", raising=False)
    return engine


