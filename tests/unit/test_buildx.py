"""The BuildKit engine's pure parts: buildx's rawjson progress, BuildKit's Dockerfile dialect, engine choice.

The rawjson fixture is what `docker buildx build --progress=rawjson` (buildx 0.13.1, the engine's
BuildKit v0.8) printed here for the Dockerfile beside it, on its second run: FROM, the first RUN and
the COPY cached, the last RUN printing a partial line, a line on stderr, then exiting 3.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from builder.engine import buildkit as buildx
from builder.engine import connect as engines
from builder.engine.buildkit import RawJsonProgress
from builder.engine.api import BuildLog, BuildOptions, BuildRequest, Dialect
from builder.errors import BuildError, ConfigError, EngineUnavailable
from builder.images.build import build_context
from builder.render.dockerfile import dialect_mounts, dockerfile_for, prepare

from tests.unit.test_render import VARIANTS

FIXTURES = Path(__file__).parent / "fixtures" / "buildx"
RAWJSON = (FIXTURES / "rawjson-cached-then-exit-3.txt").read_text()


def parse(text: str, chunk: int) -> tuple[RawJsonProgress, list, BuildLog]:
    log, events = BuildLog(), []
    progress = RawJsonProgress(log, events.append)
    for start in range(0, len(text), chunk):
        progress.feed(text[start:start + chunk])
    progress.close()
    return progress, events, log


@pytest.mark.parametrize("chunk", [1, 7, 4096, len(RAWJSON)])
def test_rawjson_becomes_the_same_steps_cache_hits_and_output_in_any_chunking(chunk):
    progress, events, log = parse(RAWJSON, chunk)
    assert [(e.kind, e.step, e.total) for e in events if e.kind in ("step", "cached")] == [
        ("step", 1, 4), ("cached", 1, 4), ("step", 2, 4), ("cached", 2, 4), ("step", 3, 4), ("cached", 3, 4),
        ("step", 4, 4)]
    assert [e.text for e in events if e.kind == "output"] == ["partial end", "to-stderr"]
    error = progress.failure(1)
    assert (error.step, error.total, error.exit_status) == (4, 4, 3)
    assert error.instruction.startswith('RUN printf "partial"')
    # the log reads as the classic builder's, so doctor and the failure tail work on it unchanged
    assert "Step 4/4 : RUN printf \"partial\" && sleep 0.2 && echo \" end\" && echo to-stderr >&2 && exit 3" in log.lines
    assert log.tail()[:2] == ["partial end", "to-stderr"]


def test_a_buildx_failure_before_any_step_is_what_buildx_said():
    progress, events, _ = parse("ERROR: failed to find driver \"nope\"\n", 5)
    assert events == [] and str(progress.failure(1)) == 'docker buildx build failed: ERROR: failed to find driver "nope"'


def test_garbage_and_credentials_in_the_stream_are_survived_and_masked():
    status = {"logs": [{"vertex": "x", "stream": 1,
                        "data": "aHR0cHM6Ly91OnMzY3IzdHpAaWR4LmV4YW1wbGUvc2ltcGxlCg=="}]}  # https://u:s3cr3tz@idx...
    text = "{not json\n}\n" + json.dumps(status) + "\n\x1b[31mplain\x1b[0m\n" + "[1, 2]\n{\"vertexes\": 5}\n"
    _, events, log = parse(text, 3)
    shown = " ".join(e.text for e in events) + " ".join(log.lines)
    assert "s3cr3tz" not in shown and "idx.example" in shown


MOUNTS = ("--mount=type=secret,id=stackbuild-site,required=false --mount=type=cache,id=stackbuild-pip,"
          "target=/root/.cache/pip --mount=type=cache,id=stackbuild-uv,target=/root/.cache/uv")


def test_the_buildkit_dialect_mounts_the_secret_and_caches_on_every_network_step_only():
    """Rendered in BuildKit's dialect, each network step (and nothing else) carries its mounts; same instructions."""
    dialect = buildx.BuildxEngine.dialect
    assert dialect_mounts(dialect.site_secret, dialect.cache_mounts) == MOUNTS + " "
    for variant in VARIANTS:  # every stack x release x target (+ option)
        context = prepare(*variant)
        mounted = dockerfile_for(context, dialect.site_secret, dialect.cache_mounts)
        classic, lines = context.dockerfile.splitlines(), mounted.splitlines()
        assert len(classic) == len(lines)
        changed = [(a, b) for a, b in zip(classic, lines) if a != b]
        assert changed and all(a.startswith("RUN . /opt/stackbuild/site.sh && site_begin") for a, _ in changed)
        assert all(b == "RUN " + MOUNTS + " " + a[len("RUN "):] for a, b in changed)
        assert len(changed) == sum(line.startswith("RUN . /opt/stackbuild/site.sh") for line in classic)
    assert dockerfile_for(context, *vars(Dialect()).values()) == context.dockerfile  # the classic dialect: as hashed


def test_one_entry_point_builds_a_context_in_the_engines_dialect():
    """build_context hands each engine the Dockerfile in its own dialect and one BuildRequest."""
    class Recorder:
        def __init__(self, dialect):
            self.dialect, self.requests = dialect, []

        def build(self, request, log, on_event):
            self.requests.append(request)
            return "sha256:1"

    context = prepare("qlora", "2026.11", "cpu", ())
    options = BuildOptions(site={"PIP_INDEX_URL": "https://idx.example/simple"})
    for dialect, mounted in ((Dialect(), False), (buildx.BuildxEngine.dialect, True)):
        engine = Recorder(dialect)
        assert build_context(engine, context, "t:1", {"a": "b"}, options, BuildLog(), lambda event: None) == "sha256:1"
        request = engine.requests[0]
        assert isinstance(request, BuildRequest) and request.files == context.files and request.tag == "t:1"
        assert request.options.site == {"PIP_INDEX_URL": "https://idx.example/simple"}
        assert (request.dockerfile != context.dockerfile) is mounted and (MOUNTS in request.dockerfile) is mounted


def fake_docker(tmp_path: Path, script: str) -> str:
    path = tmp_path / "docker"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_auto_is_buildkit_only_where_docker_buildx_answers(tmp_path, monkeypatch):
    answers = fake_docker(tmp_path, 'echo "github.com/docker/buildx 0.13.1 abc"\n')
    monkeypatch.setattr(buildx, "DOCKER_CLI", answers)
    assert engines.resolve("auto") == "buildkit"
    assert engines.describe("auto") == "buildkit (github.com/docker/buildx 0.13.1 abc)"
    (tmp_path / "silent").mkdir()
    silent = fake_docker(tmp_path / "silent", "echo \"docker: 'buildx' is not a docker command.\" >&2; exit 1\n")
    monkeypatch.setattr(buildx, "DOCKER_CLI", silent)
    assert engines.resolve("auto") == "classic"
    assert engines.describe("auto").startswith("classic (the Docker SDK's classic builder; docker buildx does not")
    assert engines.resolve("classic") == "classic" and engines.resolve("auto", "remote-1") == "buildkit"
    with pytest.raises(ConfigError, match="names a buildx builder, which the classic engine does not use"):
        engines.resolve("classic", "remote-1")
    with pytest.raises(EngineUnavailable, match="needs the `docker buildx` plugin"):
        engines.connect(kind="buildkit")


@pytest.mark.parametrize("name", ["[ 3/12] RUN make", "[stage-0  3/12] RUN make", "[stage-0 3/12] RUN make",
                                  "[3/12] RUN make"])
def test_step_names_of_every_buildkit_version_are_steps(name):
    match = buildx.VERTEX_STEP.match(name)
    assert match and (match[1], match[2], match[3]) == ("3", "12", "RUN make")
    assert buildx.VERTEX_STEP.match("[internal] load build context") is None


def test_steps_buildkit_never_loads_under_cached_ones_count_as_cache_hits():
    # a fully cached build: BuildKit reports only the last steps it needed, as cached
    vertexes = [{"digest": f"d{n}", "name": f"[{n}/5] RUN step {n}", "cached": True, "started": "t"} for n in (4, 5)]
    progress, events, log = parse(json.dumps({"vertexes": vertexes}), 10)
    progress.settle()
    cached = [e.step for e in events if e.kind == "cached"]
    assert sorted(cached) == [1, 2, 3, 4, 5] and log.total == 5


def test_steps_are_shown_as_the_rendered_dockerfile_has_them():
    name = "[3/9] RUN " + MOUNTS + " . /opt/stackbuild/site.sh && site_begin && pip install x"
    progress, events, _ = parse(json.dumps({"vertexes": [{"digest": "a", "name": name, "started": "t"}]}), 50)
    progress.settle()
    assert [e.text for e in events if e.step == 3] == ["RUN . /opt/stackbuild/site.sh && site_begin && pip install x"]


def test_an_unknown_builder_is_a_clear_engine_error(tmp_path):
    script = fake_docker(tmp_path, 'echo "ERROR: no builder \\"farm\\" found" >&2; exit 1\n')
    engine = buildx.BuildxEngine(object(), "unix:///run/x.sock", builder="farm", docker=script)
    with pytest.raises(BuildError, match=r'docker buildx build failed: ERROR: no builder "farm" found'):
        engine.build(BuildRequest("FROM scratch\n", (), "t:1"), BuildLog(), lambda event: None)
    with pytest.raises(EngineUnavailable, match=r'buildx builder farm is not usable: ERROR: no builder "farm" found'):
        engine.driver()
    with pytest.raises(EngineUnavailable, match="is not a buildx builder name"):
        buildx.check_builder_name("farm; rm -rf /")
