"""The BuildKit engine: builds through the `docker buildx` CLI plugin, everything else as DockerEngine.

The Docker SDK for Python cannot open BuildKit's session (secrets, cache mounts, cache export),
so `build` runs `docker buildx build --progress=rawjson` against the same engine and turns its
machine-readable progress into the same BuildEvents and build log as the classic builder's:
steps, cache hits, each step's output, and a BuildError naming the failing step. Containers,
images, pushes and pulls stay with the SDK (DockerEngine).

What BuildKit adds here: site settings as a build secret (no loopback server, any build network),
pip's and uv's download caches as cache mounts (its Dialect: render writes both into every network
step), any buildx builder
(`--builder`: remote, docker-container or kubernetes drivers), and a registry cache: exported as
its own cache manifest (mode=max) by builders that can, and by the engine's own builder (the
docker driver, which cannot export one) as the image itself with its cache inline, pushed under
the cache name.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .classic import DockerEngine
from .api import BuildEvent, BuildLog, BuildOptions, BuildRequest, Dialect
from ..errors import BuildError, EngineUnavailable
from .connect import BUILDER_RULE, BUILDX_BUILDER
from ..safety.printable import printable
from ..safety.credentials import redact
from .site_server import payload as site_payload

# "[stage-0 3/9] RUN ..." (BuildKit 0.8) or "[3/9] RUN ..." (later; padded to the total's width
# from BuildKit 0.10 on: "[ 3/12] RUN ...", "[stage-0  3/12] RUN ..."): a Dockerfile step.
VERTEX_STEP = re.compile(r"^\[(?:[^\]\s]+ +)? *(\d+)/(\d+)\] (.*)$", re.S)
MOUNTS = re.compile(r"^RUN (?:--mount=\S+ )+")
DOCKER_CLI = os.environ.get("STACKBUILD_DOCKER_CLI", "docker")
PROBE_SECONDS = 20


def buildx_version(docker: str | None = None) -> str | None:
    """What `docker buildx version` prints, or None when the plugin does not answer (asked once a process)."""
    return _buildx_version(docker or DOCKER_CLI)


@functools.lru_cache(maxsize=None)
def _buildx_version(docker: str) -> str | None:
    try:
        proc = subprocess.run([docker, "buildx", "version"], capture_output=True, text=True, timeout=PROBE_SECONDS,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    text = proc.stdout.strip()
    return printable(text.splitlines()[0]) if proc.returncode == 0 and text else None


def check_builder_name(name: str) -> str:
    if not BUILDX_BUILDER.match(name):
        raise EngineUnavailable(f"--builder '{printable(name)}' is not a buildx builder name ({BUILDER_RULE})")
    return name


class RawJsonProgress:
    """Reads `--progress=rawjson` (a stream of JSON solve statuses) into a BuildLog and BuildEvents."""

    def __init__(self, log: BuildLog, on_event: Callable[[BuildEvent], None]):
        self.log = log
        self.on_event = on_event
        self.steps: dict[str, tuple[int, int, str]] = {}  # vertex digest -> its Dockerfile step
        self.begun: set[str] = set()
        self.waiting: list[tuple[str, bool]] = []  # steps begun, not yet reported
        self.partial: dict[str, str] = {}  # a vertex's output line not yet ended
        self.errors: list[tuple[str, str]] = []  # (vertex digest, error)
        self.other: list[str] = []  # what buildx printed that is not a status (its own errors)
        self._decoder = json.JSONDecoder()
        self._buffer = ""

    def feed(self, text: str) -> None:
        self._buffer += text
        while True:
            stripped = self._buffer.lstrip()
            if not stripped:
                self._buffer = ""
                return
            if stripped[0] == "{":
                try:
                    status, end = self._decoder.raw_decode(stripped)
                except ValueError:
                    if "\n}" in stripped:  # a whole object that is not JSON after all: skip its first line
                        self._plain(stripped.split("\n", 1)[0])
                        self._buffer = stripped.split("\n", 1)[1]
                        continue
                    self._buffer = stripped
                    return
                self._buffer = stripped[end:]
                if isinstance(status, dict):
                    self.status(status)
                continue
            if "\n" not in stripped:
                self._buffer = stripped
                return
            line, self._buffer = stripped.split("\n", 1)
            self._plain(line)

    def close(self) -> None:
        self._flush()
        if self._buffer.strip():
            self._plain(self._buffer.strip())
        self._buffer = ""
        for digest in list(self.partial):
            self._line(digest, self.partial.pop(digest))

    def settle(self) -> None:
        """After a build that succeeded: the steps BuildKit never reported were cache hits.

        Where the last steps are cached, BuildKit does not load (or report) the steps beneath
        them; a step count from the cache hits alone would call a fully cached build a fresh one.
        """
        self._flush()
        if not self.steps:
            return
        total = max(self.total(digest) for digest in self.steps)
        begun = {self.steps[digest][0] for digest in self.begun}
        named = {number: instruction for number, _, instruction in self.steps.values()}
        for number in range(1, total + 1):
            if number not in begun:
                self.log.begin(number, total, named.get(number, "(cached: BuildKit did not load it)"),
                               self.on_event, cached=True)

    def _plain(self, line: str) -> None:
        line = redact(line.rstrip())
        if line:
            self.other.append(line)
            self.log.lines.append(line)

    def status(self, status: dict) -> None:
        vertexes, logs = status.get("vertexes"), status.get("logs")
        for vertex in vertexes if isinstance(vertexes, list) else []:
            if isinstance(vertex, dict):
                self._vertex(vertex)
        for entry in logs if isinstance(logs, list) else []:
            if not isinstance(entry, dict):
                continue
            try:
                data = base64.b64decode(entry.get("data") or "").decode("utf-8", "replace")
            except (ValueError, TypeError):
                continue
            digest = str(entry.get("vertex", ""))
            text = self.partial.pop(digest, "") + data.replace("\r\n", "\n").replace("\r", "\n")
            *lines, rest = text.split("\n")
            for line in lines:
                self._line(digest, line)
            if rest:
                self.partial[digest] = rest

    def _vertex(self, vertex: dict) -> None:
        digest = str(vertex.get("digest", ""))
        name = str(vertex.get("name", ""))
        step = VERTEX_STEP.match(name)
        if step and digest not in self.steps:
            # shown as the rendered Dockerfile has it: without the mounts of BuildKit's dialect
            instruction = MOUNTS.sub("RUN ", " ".join(step[3].split()))
            self.steps[digest] = (int(step[1]), int(step[2]), instruction)
        if digest in self.steps and digest not in self.begun and (vertex.get("started") or vertex.get("cached")):
            self.begun.add(digest)
            self.waiting.append((digest, bool(vertex.get("cached"))))
        if self.waiting and any(number != 1 for number, _, _ in self.steps.values()):
            self._flush()
        error = vertex.get("error")
        if error and all(digest != seen for seen, _ in self.errors):
            self.errors.append((digest, str(error)))

    def _flush(self) -> None:
        """Report the steps that began; FROM waits until the build's step count is known (see total)."""
        for digest, cached in self.waiting:
            number, _, instruction = self.steps[digest]
            self.log.begin(number, self.total(digest), instruction, self.on_event, cached=cached)
        self.waiting.clear()

    def total(self, digest: str) -> int:
        """The build's step count. BuildKit 0.8 numbers FROM against another count ("[1/7] FROM" beside
        "[2/4] RUN"), so the other steps' count wins where there are other steps."""
        others = [total for number, total, _ in self.steps.values() if number != 1]
        return max(others) if others else self.steps[digest][1]

    def _line(self, digest: str, line: str) -> None:
        self._flush()
        if digest in self.steps and self.steps[digest][0] != self.log.step:
            number, _, instruction = self.steps[digest]
            self.log.step, self.log.total, self.log.instruction = number, self.total(digest), instruction
        self.log.output(line, self.on_event)

    def failure(self, returncode: int) -> BuildError:
        """The BuildError of a build that ended badly: the failing step's, else what buildx said."""
        for digest, error in self.errors:
            if digest in self.steps:
                number, _, instruction = self.steps[digest]
                self.log.step, self.log.total, self.log.instruction = number, self.total(digest), instruction
                message = redact(" ".join(error.split()))
                self.log.lines.append(message)
                return self.log.step_error(message)
        said = [line for line in self.other if line.strip()]
        detail = said[-1] if said else (redact(self.errors[-1][1]) if self.errors else f"exit status {returncode}")
        return BuildError(f"docker buildx build failed: {detail}")


class BuildxEngine(DockerEngine):
    """DockerEngine whose builds go through BuildKit (`docker buildx build`)."""

    kind = "buildkit"
    # Site settings arrive as this build secret; pip's and uv's download caches are cache mounts, so a
    # rebuilt layer downloads again only what it has never downloaded. Render writes them into every
    # network step; the content tag hashes the classic rendering: the image is the same.
    dialect = Dialect(site_secret="stackbuild-site",
                      cache_mounts=(("stackbuild-pip", "/root/.cache/pip"), ("stackbuild-uv", "/root/.cache/uv")))

    def __init__(self, client, address: str, builder: str | None = None, docker: str | None = None):
        super().__init__(client, address)
        self.builder = builder
        self.docker = docker or DOCKER_CLI
        self._driver: str | None = None

    @classmethod
    def connect(cls, timeout: int = 600, builder: str | None = None) -> BuildxEngine:
        if buildx_version() is None:
            raise EngineUnavailable("the BuildKit engine needs the `docker buildx` plugin, which does not answer "
                                    "here (`docker buildx version`): install it (Debian: docker-buildx; Docker's "
                                    "packages: docker-buildx-plugin) or build with --engine classic")
        engine = DockerEngine.connect(timeout)
        return cls(engine.client, engine.address, check_builder_name(builder) if builder else None)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.builder is None:  # the engine the SDK talks to, whatever the CLI's context or BUILDX_BUILDER
            env["DOCKER_HOST"] = self.address
            env.pop("BUILDX_BUILDER", None)
        return env

    def _builder_args(self) -> list[str]:
        return ["--builder", self.builder] if self.builder else []

    def driver(self) -> str:
        """The builder's driver (docker, docker-container, remote, kubernetes), from `buildx inspect`."""
        if self._driver is None:
            try:
                proc = subprocess.run([self.docker, "buildx", "inspect", *self._builder_args()], capture_output=True,
                                      text=True, timeout=PROBE_SECONDS, env=self._env(), stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError) as exc:
                raise EngineUnavailable(f"`docker buildx inspect` failed: {exc}") from None
            if proc.returncode != 0:
                said = redact(((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1])
                raise EngineUnavailable(f"buildx builder {self.builder or '(default)'} is not usable: "
                                        f"{printable(said)} (`docker buildx ls` lists the builders)")
            found = re.search(r"^Driver:\s*(\S+)", proc.stdout, re.M)
            self._driver = found.group(1) if found else "docker"
        return self._driver

    def check_options(self, options: BuildOptions) -> None:
        """BuildKit takes every option (zstd's needs are checked when the build asks the builder's driver)."""

    def build(self, request: BuildRequest, log: BuildLog, on_event: Callable[[BuildEvent], None]) -> str:
        """Build and tag one image with BuildKit; returns its id. Raises BuildError with the failing step."""
        # The engine's own builder exports a registry cache only on containerd's image store; elsewhere
        # its cache goes inline into the image, which is then pushed under the cache's name.
        options = request.options
        tag, cache_from, cache_to, compression = request.tag, options.cache_from, options.cache_to, options.compression
        secrets = {self.dialect.site_secret: site_payload(options.site)} if options.site else {}
        inline_cache = bool(cache_to) and self.driver() == "docker" and not self.containerd_store()
        if compression == "zstd" and (self.driver() != "docker" or not self.containerd_store()):
            where = (f"builder {self.builder} is not the engine's own" if self.driver() != "docker"
                     else f"the engine at {self.address} keeps images in its own store")
            raise BuildError(f"zstd layers need an engine on containerd's image store (dockerd 24+ with the "
                             f"containerd-snapshotter feature) and its own builder, but {where}: build with "
                             "--compression gzip")
        with tempfile.TemporaryDirectory(prefix="stackbuild-buildx-") as work:
            context = Path(work) / "context"
            context.mkdir()
            (context / "Dockerfile").write_text(request.dockerfile, encoding="utf-8")
            for rel, content in request.files:
                path = context / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            # One image manifest, no provenance index beside it; zstd: stored (and so pushed) as zstd layers,
            # with OCI's media types: containerd unpacks no layer of Docker's type with a zstd suffix
            # ("failed to unpack image ... mismatched image rootfs and manifest layers" on the pull).
            zstd = "type=image,name={},compression=zstd,force-compression=true,oci-mediatypes=true"
            output = ["--output", zstd.format(tag)] if compression == "zstd" else ["--load", "-t", tag]
            command = [self.docker, "buildx", "build", *self._builder_args(), "--progress=rawjson", "--provenance=false",
                       *output, "-f", str(context / "Dockerfile")]
            for key, value in request.labels.items():
                command += ["--label", f"{key}={value}"]
            for key, value in options.buildargs.items():
                command += ["--build-arg", f"{key}={value}"]
            if options.network:
                command += ["--network", "default" if options.network == "bridge" else options.network]
            if options.nocache:
                command.append("--no-cache")
            if cache_from:
                command += ["--cache-from", f"type=registry,ref={cache_from}"]
            if cache_to:
                # the cache's layers compressed as the image's: zstd ones a fresh engine unpacks faster
                packed = ",compression=zstd,force-compression=true,oci-mediatypes=true" if compression == "zstd" else ""
                command += ["--cache-to", "type=inline" if inline_cache
                            else f"type=registry,ref={cache_to},mode=max{packed}"]
            # Secrets as files in this private folder (a CA bundle is too long for an environment
            # variable), outside the context, gone when the build ends.
            for number, (name, value) in enumerate(sorted(secrets.items())):
                path = Path(work) / f"secret-{number}"
                path.touch(mode=0o600)
                path.write_bytes(value)
                command += ["--secret", f"id={name},src={path}"]
            command.append(str(context))
            self._run(command, log, on_event)
        # The engine's id for it (on containerd's store not the config digest buildx writes to --iidfile)
        info = self.image(tag)
        if info is None:
            raise BuildError(f"docker buildx build ended but the engine has no {tag}")
        image_id = info["Id"]
        on_event(BuildEvent("done", image_id))
        if cache_to and inline_cache:
            on_event(BuildEvent("note", f"the engine's own builder keeps its cache inline: pushing the image as "
                                        f"{cache_to}"))
            self.tag(image_id, cache_to)
            try:
                self.push(cache_to, on_event)
            finally:
                self.untag(cache_to)
        return image_id

    def _run(self, command: list[str], log: BuildLog, on_event: Callable[[BuildEvent], None]) -> None:
        progress = RawJsonProgress(log, on_event)
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
        except OSError as exc:
            raise EngineUnavailable(f"cannot run {self.docker} buildx: {exc.strerror or exc}") from None
        try:
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
                progress.feed(chunk.decode("utf-8", "replace"))
            returncode = proc.wait()
        except BaseException:
            # Ctrl-C or any failure here: buildx cancels the solve on SIGINT; BuildKit leaves no container.
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            raise
        progress.close()
        if returncode != 0:
            raise progress.failure(returncode)
        progress.settle()
