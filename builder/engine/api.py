"""What stackbuild needs from a container engine: the interface, and the events a build reports.

builder/engine/classic.py implements it with Docker (the SDK, the classic builder) and
builder/engine/buildkit.py with BuildKit; the unit tests' fake engine is checked against it too
(tests/unit/test_architecture.py). Another engine (Podman, a remote builder) is one more class
implementing these methods, registered in builder/engine/connect.py. Each engine owns its dialect:
how site settings reach a build (a build secret, or the loopback site server), which download
caches its network steps mount, and what it refuses (``check_options``). It says so as data
(``Dialect``), which the build orchestration hands to render; nothing here imports render, a
plan or a profile, nor an engine's library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import BuildError
from ..safety.credentials import redact

STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
# The classic builder: "returned a non-zero code: 1"; BuildKit: "... did not complete successfully: exit code: 1".
NONZERO = re.compile(r"returned a non-zero code: (\d+)|exit code: (\d+)")


@dataclass(frozen=True)
class BuildEvent:
    """One thing that happened during a build, pull or push, for progress reporters."""

    kind: str  # step | cached | output | done | layer | note | warning
    text: str = ""
    step: int = 0
    total: int = 0
    layer: str = ""  # layer events: the layer's short id, with bytes done of size
    done: int = 0
    size: int = 0


OnEvent = Callable[[BuildEvent], None]


@dataclass(frozen=True)
class GpuRequest:
    """The devices a container asks its engine for: every GPU ("all"), a count, or device ids."""

    devices: str  # all | a count | comma-separated ids
    capabilities: tuple[str, ...] = ("gpu",)

    @classmethod
    def of(cls, devices: str | None, capabilities: tuple[str, ...] = ("gpu",)) -> GpuRequest | None:
        """The request for ``devices`` (none, all, a count, ids; a target's default when the user named none)."""
        return None if not devices or devices == "none" else cls(devices, tuple(capabilities))

    @property
    def count(self) -> int | None:
        """-1 for every GPU, a number for a count, None when ids name the devices."""
        if self.devices == "all":
            return -1
        return int(self.devices) if self.devices.isdigit() else None

    @property
    def device_ids(self) -> list[str] | None:
        return None if self.count is not None else self.devices.split(",")


@dataclass(frozen=True)
class Dialect:
    """How an engine wants a Dockerfile's network steps written: data render reads, never code it runs."""

    site_secret: str | None = None  # the build secret site settings arrive as; None: the loopback site server
    cache_mounts: tuple[tuple[str, str], ...] = ()  # (cache id, target) mounted into every network step


@dataclass(frozen=True)
class BuildOptions:
    """How to build, whatever the image: the engine checks them before anything runs (``check_options``)."""

    network: str | None = None  # the build network (None: the engine's default)
    nocache: bool = False
    buildargs: dict[str, str] = field(default_factory=dict)
    site: dict[str, str] = field(default_factory=dict)  # site settings: the engine decides how they arrive
    cache_from: str | None = None  # a registry cache to read (an image reference)
    cache_to: str | None = None  # a registry cache to write
    compression: str = "gzip"  # of the stored layers, which a push sends as they are: gzip or zstd


@dataclass(frozen=True)
class BuildRequest:
    """One build: the Dockerfile (in the engine's dialect), its context files, the tag and labels, the options."""

    dockerfile: str
    files: tuple[tuple[str, bytes], ...]
    tag: str
    labels: dict[str, str] = field(default_factory=dict)
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True)
class ExecRun:
    """A command started in a container: ``output`` yields its (stdout, stderr) chunks as they come;
    ``exit_code()`` is its exit status once they end; ``stop()`` ends it and every process it started
    (the engine has no call for that: a Ctrl-C of the client leaves the process running)."""

    output: Iterable[tuple[bytes | None, bytes | None]]
    exit_code: Callable[[], int]
    stop: Callable[[], bool]


@dataclass
class BuildLog:
    """The whole build output, kept so a failure can show its last lines and write it to a file."""

    lines: list[str] = field(default_factory=list)
    step: int = 0
    total: int = 0
    instruction: str = ""
    step_start: int = 0

    def tail(self, count: int = 15) -> list[str]:
        return [line for line in self.lines[self.step_start:] if line.strip()][-count:]

    def record(self, line: str, on_event: OnEvent) -> None:
        """Keep one line of the classic builder's output and report what it means: a step, a cache hit, or output."""
        line = redact(line)  # a tool that prints an index URL with its token: never shown, never in the log
        step = STEP.match(line)
        if step:
            self.begin(int(step[1]), int(step[2]), step[3], on_event)
        elif line.strip() == "---> Using cache":
            self.lines.append(line)
            on_event(BuildEvent("cached", self.instruction, self.step, self.total))
        elif not line.startswith((" ---> ", "Removing intermediate container", "Successfully ")):
            self.output(line, on_event)
        else:
            self.lines.append(line)

    def begin(self, step: int, total: int, instruction: str, on_event: OnEvent, cached: bool = False) -> None:
        """A step starts (any engine): written to the log as the classic builder writes it."""
        instruction = redact(instruction)
        self.step, self.total, self.instruction = step, total, instruction
        self.lines.append(f"Step {step}/{total} : {instruction}")
        self.step_start = len(self.lines)
        on_event(BuildEvent("step", instruction, step, total))
        if cached:
            self.lines.append(" ---> Using cache")
            on_event(BuildEvent("cached", instruction, step, total))

    def output(self, line: str, on_event: OnEvent) -> None:
        """One line a step printed (any engine)."""
        line = redact(line)
        self.lines.append(line)
        on_event(BuildEvent("output", line, self.step, self.total))

    def step_error(self, message: str) -> BuildError:
        """The BuildError of the step running now, with the exit status the message names."""
        code = NONZERO.search(message)
        status = next((int(group) for group in code.groups() if group), None) if code else None
        return BuildError(message, step=self.step, total=self.total, instruction=self.instruction,
                          exit_status=status)


@runtime_checkable
class ImageEngine(Protocol):
    """Images: inspect, build, tag, and move them to and from registries."""

    address: str

    def image(self, ref: str) -> dict | None:
        """`image inspect` (Id, Config.Labels, RepoDigests), or None when there is no such image."""

    def labels(self, ref: str) -> dict[str, str]:
        """An image's labels; SelectionError when there is no such image."""

    def local_identity(self, ref: str) -> str | None:
        """``ref@digest`` of an image here (its registry digest, else its id), or None."""

    def remote_digest(self, ref: str) -> str | None:
        """The digest a registry gives ``ref`` now, without pulling; None when it cannot be asked."""

    def base_identity(self, ref: str, pull: bool, on_event: OnEvent | None = None) -> str:
        """The base reference with its digest, pulling it first when absent or when asked."""

    def pull(self, ref: str, on_event: OnEvent | None = None) -> None:
        """Pull one image (RegistryError with a reason: not-found, denied, unreachable, other)."""

    def push(self, ref: str, on_event: OnEvent | None = None) -> str:
        """Push one tag; the manifest digest the registry gave it."""

    def untag(self, ref: str) -> None:
        """Remove one name of an image."""

    def tag(self, image: str, ref: str) -> None:
        """Give an image (by id or name) another name."""

    kind: str  # its name in the ``engine`` setting ("classic", "buildkit"): shown, never branched on outside
    dialect: Dialect  # how its builds want network steps written (render reads it)

    def check_options(self, options: BuildOptions) -> None:
        """ConfigError, naming the fix, for options this engine cannot honour; before anything runs."""

    def build(self, request: BuildRequest, log: BuildLog, on_event: OnEvent) -> str:
        """Build and tag one image; its id (BuildError naming the step).

        Site settings (``request.options.site``) reach RUN steps as this engine's dialect says,
        never a layer, `docker history` or the content tag: a build secret under /run/secrets, or
        the loopback site server (builder/engine/site_server.py) for as long as the build runs.
        """


@runtime_checkable
class ContainerEngine(Protocol):
    """Containers: start long-lived ones, run commands in them, list, stop and remove them."""

    def start_container(self, image: str, name: str, labels: dict[str, str], gpus: GpuRequest | None,
                        shm_size: str | None = None, *, network: str = "none", binds: list[str] | None = None,
                        volumes: dict[str, str] | None = None, env: dict[str, str] | None = None,
                        workdir: str | None = None, ports: dict[str, int | None] | None = None,
                        user: str | None = None, ipc_host: bool = False,
                        ulimits: dict[str, int] | None = None, init: bool = True,
                        lifetime_s: int | None = None) -> str:
        """Start a container whose command only waits (for ever, or ``lifetime_s`` seconds); its id."""

    def containers(self, label: str) -> list[dict]:
        """The containers carrying ``label``, running or not, as `inspect` gives them."""

    def container(self, name: str) -> dict | None:
        """`container inspect`, or None when there is no such container."""

    def stop_container(self, container: str, timeout: int = 10) -> None: ...

    def remove_container(self, container: str) -> None: ...

    def exec_stream(self, container: str, command: list[str], workdir: str | None = None) -> ExecRun:
        """Run a command: its (stdout, stderr) chunks as they come, its exit code, and how to stop it."""

    def exec_lines(self, container: str, command: list[str]) -> tuple[Iterable[str], Callable[[], int]]:
        """Run a command: its output lines as they come, and a function giving its exit code."""


@runtime_checkable
class Engine(ImageEngine, ContainerEngine, Protocol):
    """A whole engine, as commands get it from builder/engine/connect.py."""

    def host_info(self) -> dict:
        """version, address, runtimes and root_dir of the engine (for `stackbuild doctor --host`)."""

    def close(self) -> None: ...
