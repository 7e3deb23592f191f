"""Real-engine fixtures: one engine per session, each stack image built once, cleanup by label.

Tests here are marked `docker`. Without an engine they are skipped locally and fail in CI
(CI=true). Settings come from the environment as a user's would (.ci/run exports
STACKBUILD_BUILD_NETWORK=host and STACKBUILD_CA_BUNDLE for this machine's TLS proxy).

Stack images keep their normal names (stackbuild/<stack>:<release>-<target>) and stay as the
deliberate layer cache between runs; everything else a test makes (fixture-profile images,
containers) carries the io.stackbuild.test label, is removed by the test that made it, and is
swept at session end: the containers and images of this run only (the client the fixtures hand
out adds io.stackbuild.test.run=<this run's id> to every test-labelled container and image it
creates), and test-labelled containers of no run that have exited. Another run on the same engine
(a second checkout's tests, a bench) keeps its running containers: sweeping every test-labelled
container killed a two-node training run of another session mid-step, leaving a log that just
stopped.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import docker
import pytest
from docker.models.containers import ContainerCollection
from docker.models.images import ImageCollection

from builder.engine import connect as engines
from builder.images.build import BuildResult, build_image
from builder.engine.buildkit import buildx_version
from builder.config import load_settings
from builder.engine.classic import DockerEngine
from builder.engine.api import BuildLog, BuildOptions, BuildRequest
from builder.render.dockerfile import prepare

FIXTURES = Path(__file__).parent / "fixtures"
TEST_LABEL = "io.stackbuild.test"
RUN_LABEL = "io.stackbuild.test.run"
RUN_ID = uuid.uuid4().hex[:12]  # this test session's: its sweep removes what carries it


def _with_run(labels):
    """A test-labelled container's or image's labels, with this run's id added."""
    if isinstance(labels, dict) and TEST_LABEL in labels:
        return {RUN_LABEL: RUN_ID, **labels}  # an explicit run id stays
    return labels


class _RunContainers(ContainerCollection):
    def list(self, *args, **kwargs):
        # list() inspects every container it listed; one removed in between (a --rm smoke container whose
        # check finished) is skipped instead of failing the test with NotFound
        kwargs.setdefault("ignore_removed", True)
        return super().list(*args, **kwargs)

    def create(self, image, command=None, **kwargs):
        kwargs["labels"] = _with_run(kwargs.get("labels"))
        return super().create(image, command, **kwargs)


class _RunImages(ImageCollection):
    def build(self, **kwargs):
        kwargs["labels"] = _with_run(kwargs.get("labels"))
        return super().build(**kwargs)


class RunClient(docker.DockerClient):
    """docker.DockerClient whose test-labelled containers and images carry this run's id."""

    @property
    def containers(self):
        return _RunContainers(client=self)

    @property
    def images(self):
        return _RunImages(client=self)

# testcontainers starts a reaper container (Ryuk) pulled from Docker Hub, which is unreachable here;
# containers are removed by the tests themselves and swept by label at session end instead.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.docker)


def sweep(client, run_id: str) -> list[str]:
    """Remove run `run_id`'s test-labelled containers and images, and test-labelled containers of no run
    that have exited; the names of the containers removed. Another run's, running or not, stay."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        run = container.labels.get(RUN_LABEL)
        if run == run_id or (run is None and container.status in ("exited", "dead")):
            try:
                container.remove(force=True)
                removed.append(container.name)
            except docker.errors.NotFound:  # gone meanwhile (--rm)
                pass
    for image in client.images.list(filters={"label": f"{RUN_LABEL}={run_id}"}):
        client.images.remove(image.id, force=True)
    return removed


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = RunClient.from_env(version="auto", timeout=900)
        client.ping()
    except Exception as exc:  # any failure to reach the engine
        message = f"no Docker engine: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must start one: .ci/run runs .ci/harness.sh)")
        pytest.skip(message)
    cache_before = {r["ID"] for r in client.df().get("BuildCache") or []}
    yield client
    sweep(client, RUN_ID)
    # the fixture profiles' BuildKit cache (their images are gone); the stack images' cache stays
    prune_build_cache_records(client, cache_before)
    client.close()


@pytest.fixture(scope="session")
def settings(docker_client):
    return load_settings()


def engine_of(release: str) -> str:
    """The engine that builds a release's stack images here: BuildKit the current ones, the classic
    builder the era ones (each image is built once a run; both engines build real stacks)."""
    return "classic" if release.startswith("2023.") else "buildkit"


ENGINES = ("classic", "buildkit")


def prune_build_cache_records(client, keep: set[str]) -> list[dict]:
    """Prune the default engine's build cache records not in `keep` (a stack image's cache stays:
    shared with the image) and return those left."""
    return DockerEngine(client.api, client.api.base_url).prune_build_cache(lambda record: record["ID"] not in keep)


@pytest.fixture
def own_build_cache(docker_client):
    """The build cache records a test's BuildKit builds add are pruned after it. BuildKit keeps them
    when the image is removed: a --no-cache build's torch is a 7 GB record a run. List this fixture
    before those that remove the test's images, so that it runs after them."""
    before = {r["ID"] for r in docker_client.df().get("BuildCache") or []}
    yield
    left = prune_build_cache_records(docker_client, before)
    assert not [r for r in left if r.get("InUse")], "a build cache record the test made is still in use"


@pytest.fixture(scope="session")
def buildx_available():
    if buildx_version() is None:
        message = "no `docker buildx` plugin (the BuildKit engine needs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must install it: .ci/run runs .ci/harness.sh)")
        pytest.skip(message)
    return True


def _built_once(settings, target: str):
    """A getter that builds each (stack, release, options) image of ``target`` at most once, with engine_of(release)."""
    built: dict[tuple[str, str, tuple[str, ...]], BuildResult] = {}

    def get(stack: str, release: str, options: tuple[str, ...] = ()) -> BuildResult:
        key = (stack, release, tuple(options))
        if key not in built:
            engine = engines.connect(900, kind=engine_of(release))
            try:
                built[key] = build_image(prepare(stack, release, target, options), settings, engine=engine)
            finally:
                engine.close()
        return built[key]

    return get


@pytest.fixture(scope="session")
def stack_images(docker_client, settings, buildx_available):
    """Build each (stack, release, options) cpu image at most once per session, with engine_of(release)."""
    return _built_once(settings, "cpu")


@pytest.fixture(scope="session")
def cuda_images(docker_client, settings, buildx_available):
    """Build each (stack, release) cuda image at most once per session: those on a slim base (no
    nvidia/cuda here), which share the cpu image's layers through torch."""
    return _built_once(settings, "cuda")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def github_reachable() -> bool:
    try:
        with socket.create_connection(("github.com", 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture
def test_image(docker_client):
    """A unique tag for a fixture image, removed (with its test label) after the test."""
    names: list[str] = []

    def make(prefix: str) -> str:
        name = f"stackbuild-test/{unique(prefix)}:latest"
        names.append(name)
        return name

    yield make
    for name in names:
        try:
            docker_client.images.remove(docker_client.images.get(name).id, force=True)
        except docker.errors.ImageNotFound:
            pass


@pytest.fixture(scope="session")
def engine(docker_client):
    connected = DockerEngine.connect(timeout=900)
    yield connected
    connected.close()


@pytest.fixture(scope="session")
def derived_image(docker_client, engine, settings):
    """Build an image FROM a built one with extra RUN lines (to break what a check guards), or
    COPY --from=IMAGE lines.

    Offline by default; with ``network=True`` the lines run the way stackbuild's own network steps
    do - host network, the site's index/CA served for the duration through /opt/stackbuild/site.sh.
    Each derived image is built once per session (same base and lines) and removed at the end.
    """
    made: dict[tuple[str, tuple[str, ...], bool], str] = {}

    def make(base: str, lines: list[str] | tuple[str, ...], network: bool = False) -> str:
        key = (base, tuple(lines), network)
        if key in made:
            return made[key]
        tag = f"stackbuild-test/{unique('derived')}:latest"
        # a line "COPY --from=IMAGE ..." is kept as it is (a file of another built image); the rest are RUN lines
        if network:
            runs = [line if line.startswith("COPY --from=") else
                    f"RUN . /opt/stackbuild/site.sh && site_begin && {line} && site_end" for line in lines]
        else:
            runs = [line if line.startswith("COPY --from=") else f"RUN {line}" for line in lines]
        dockerfile = "\n".join([f"FROM {base}", 'SHELL ["/bin/bash", "-o", "pipefail", "-c"]', *runs]) + "\n"
        options = BuildOptions(network="host" if network else "none", site=settings.site if network else {})
        engine.build(BuildRequest(dockerfile, (), tag, {TEST_LABEL: "1"}, options), BuildLog(), lambda event: None)
        made[key] = tag
        return tag

    yield make
    for tag in made.values():
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
