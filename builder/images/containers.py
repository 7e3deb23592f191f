"""Working containers: `stackbuild run | shell | exec | ps | stop | rm`.

A working container is long-lived and detached (its command only waits), labelled
io.stackbuild.container, and set up for training: a large /dev/shm (or the host's IPC), memlock
unlimited, a 64 MB stack, an init process, the Hugging Face cache on a named volume, GPUs through
device requests. Users enter it the way they already know: `docker exec -it NAME bash`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..plan import labels as schema
from ..engine.api import ContainerEngine, GpuRequest
from ..errors import ContainerError, SelectionError, UsageError
from ..profile.names import parse_assignments
from ..safety.printable import printable
from ..profile import targets

LABEL = schema.CONTAINER
HF_VOLUME = "stackbuild-hf-cache"
RLIMIT_NAMES = {3: "stack", 8: "memlock"}  # Linux RLIMIT_STACK, RLIMIT_MEMLOCK
HF_HOME = "/root/.cache/huggingface"
NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}\Z")
NAME_OR_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}\Z")  # what find() may ask the engine about
SIZE = re.compile(r"^[1-9][0-9]*[bkmg]?\Z", re.IGNORECASE)
NETWORKS = ("bridge", "host", "none")


@dataclass
class RunOptions:
    name: str | None = None
    gpus: str | None = None  # None: the target's default (targets.py: every GPU for a GPU target)
    volumes: list[str] = field(default_factory=list)  # SRC:DST[:ro]
    workdir: str | None = None
    env: list[str] = field(default_factory=list)  # K=V
    shm_size: str = "16g"
    ipc_host: bool = False
    ports: list[str] = field(default_factory=list)  # [HOST:]CONTAINER
    network: str = "bridge"
    as_host_user: bool = False
    hf_cache: bool = True


# memlock unlimited (pinned host memory for NCCL and offload) and a 64 MB stack, as NVIDIA's
# containers recommend for training.
TRAINING_ULIMITS = {"memlock": -1, "stack": 67108864}


@dataclass(frozen=True)
class Started:
    name: str
    id: str
    image: str
    warnings: tuple[str, ...] = ()

    def enter_lines(self) -> list[str]:
        return [f"docker exec -it {self.name} bash", f"stackbuild shell {self.name}"]


def default_name(stack: str, release: str, target: str) -> str:
    return f"{stack}-{release.replace('.', '')}-{target}"


def parse_binds(specs: list[str]) -> list[str]:
    """``SRC:DST[:ro|rw]`` with an existing SRC (made absolute) and an absolute DST."""
    binds = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise UsageError(f"-v {printable(spec)}: write it as SRC:DST or SRC:DST:ro")
        source = Path(parts[0]).expanduser()
        if not source.exists():
            raise UsageError(f"-v {printable(spec)}: {printable(str(source))} does not exist on this host")
        if not parts[1].startswith("/"):
            raise UsageError(f"-v {printable(spec)}: the path inside the container must be absolute")
        binds.append(":".join([str(source.resolve()), *parts[1:]]))
    return binds


def parse_env(specs: list[str]) -> dict[str, str]:
    return parse_assignments(specs, UsageError, "--env {}: write it as NAME=VALUE")


def parse_ports(specs: list[str]) -> dict[str, int | None]:
    """``[HOST:]CONTAINER`` -> {"CONTAINER/tcp": HOST or None (any free port)}."""
    ports: dict[str, int | None] = {}
    for spec in specs:
        host, _, inside = spec.rpartition(":")
        if not inside.isdigit() or (host and not host.isdigit()) or not 0 < int(inside) < 65536 \
                or (host and not 0 < int(host) < 65536):
            raise UsageError(f"-p {printable(spec)}: write it as CONTAINER_PORT or HOST_PORT:CONTAINER_PORT")
        ports[f"{int(inside)}/tcp"] = int(host) if host else None
    return ports


def check_options(options: RunOptions) -> None:
    if options.name is not None and not NAME.match(options.name):
        raise UsageError(f"--name {printable(options.name)}: use letters, digits, '_', '.' and '-' (at most 63, starting "
                         "with a letter or digit)")
    if not SIZE.match(options.shm_size):
        raise UsageError(f"--shm-size {printable(options.shm_size)}: write a size like 16g or 512m")
    if options.gpus is not None:
        targets.check_gpus(options.gpus)
    if options.network not in NETWORKS:
        raise UsageError(f"--network {printable(options.network)}: use {', '.join(NETWORKS)} (another "
                         "container's network, container:NAME, is not offered: start it with docker run)")
    if options.ports and options.network != "bridge":
        raise UsageError(f"-p {printable(options.ports[0])} publishes a port of the bridge network: with --network "
                         f"{options.network} there is none to publish (use --network bridge"
                         + (", or reach the port on the host directly)" if options.network == "host" else ")"))
    if options.workdir is not None and not options.workdir.startswith("/"):
        raise UsageError(f"--workdir {printable(options.workdir)}: must be an absolute path inside the container")


@dataclass(frozen=True)
class TrainingSetup:
    """How a working container of a target is set up for training: what `run` asks the engine for
    and what `devcontainer` writes into devcontainer.json, made in one place (``training_setup``)."""

    gpus: GpuRequest | None  # the device request: the target's default (every GPU on a GPU target) or --gpus
    shm_size: str | None  # /dev/shm; None when the host's IPC namespace is shared
    ipc_host: bool
    ulimits: dict[str, int]  # name -> soft and hard value (-1: unlimited)
    volumes: dict[str, str]  # named volume -> path inside
    binds: list[str]  # SRC:DST[:ro], SRC absolute
    env: dict[str, str]
    user: str | None  # None: the image's own user
    workdir: str | None  # None: the image's WORKDIR
    ports: dict[str, int | None]
    network: str
    init: bool = True  # an init process reaps what training leaves behind (DataLoader workers, launchers)


def training_setup(target: str, options: RunOptions) -> TrainingSetup:
    """The training defaults for a container of ``target``, with ``options`` applied; UsageError for a
    malformed option, before anything is created."""
    check_options(options)
    env = parse_env(options.env)
    volumes = {}
    if options.hf_cache:
        volumes[HF_VOLUME] = HF_HOME
        env.setdefault("HF_HOME", HF_HOME)
    user = f"{os.getuid()}:{os.getgid()}" if options.as_host_user else None
    if user:
        # a host user has no home in the image: give it a writable one
        env.setdefault("HOME", "/tmp")
    return TrainingSetup(
        gpus=GpuRequest.of(targets.gpu_devices(target, options.gpus), targets.entry_or_default(target).gpu_capabilities),
        shm_size=None if options.ipc_host else options.shm_size, ipc_host=options.ipc_host,
        ulimits=dict(TRAINING_ULIMITS), volumes=volumes, binds=parse_binds(options.volumes), env=env, user=user,
        workdir=options.workdir, ports=parse_ports(options.ports), network=options.network)


def start_training(engine: ContainerEngine, image: str, name: str, labels: dict[str, str], setup: TrainingSetup,
                   lifetime_s: int | None = None) -> tuple[str, dict[str, int], tuple[str, ...]]:
    """Start a container of ``image`` set up as ``setup`` says: (its id, the limits it got, warnings).

    An engine that may not raise a limit (rootless, or sandboxed without CAP_SYS_RESOURCE) says
    "error setting rlimit type N": the container starts without that limit, and a warning says so."""
    ulimits = dict(setup.ulimits)
    warnings: list[str] = []
    while True:
        try:
            container = engine.start_container(
                image, name, labels, setup.gpus, setup.shm_size, network=setup.network, binds=setup.binds,
                volumes=setup.volumes, env=setup.env, workdir=setup.workdir, ports=setup.ports, user=setup.user,
                ipc_host=setup.ipc_host, ulimits=ulimits, init=setup.init, lifetime_s=lifetime_s)
            return container, ulimits, tuple(warnings)
        except ContainerError as exc:
            refused = re.search(r"error setting rlimit type (\d+)", str(exc))
            limit = RLIMIT_NAMES.get(int(refused[1])) if refused else None
            if limit not in ulimits:
                raise
            del ulimits[limit]
            warnings.append(f"this Docker engine may not set the {limit} limit (operation not permitted): started "
                            f"without --ulimit {limit}={setup.ulimits[limit]}"
                            + ("; pinned-memory offload and NCCL may be limited" if limit == "memlock" else ""))


def run_container(engine: ContainerEngine, image: str, labels: dict[str, str], name: str, target: str,
                  options: RunOptions) -> Started:
    """Create and start a working container of ``image``; nothing is left behind when it fails."""
    setup = training_setup(target, options)
    container, _, warnings = start_training(engine, image, name, {LABEL: "1", **labels}, setup)
    return Started(name, container, image, warnings)


@dataclass(frozen=True)
class Listed:
    name: str
    stack: str
    image: str
    status: str


def list_containers(engine: ContainerEngine) -> list[Listed]:
    out = []
    for info in engine.containers(LABEL):
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL) != "1":
            continue  # io.stackbuild.container=false is not ours
        spec = f"{labels.get(schema.STACK, '?')}@{labels.get(schema.RELEASE, '?')} " \
               f"({labels.get(schema.TARGET, '?')})"
        out.append(Listed(info["Name"].lstrip("/"), spec, (info.get("Config") or {}).get("Image", "?"),
                          (info.get("State") or {}).get("Status", "?")))
    return sorted(out, key=lambda c: c.name)


def find(engine: ContainerEngine, name: str) -> dict:
    """A stackbuild container by name or id; anything else is refused with what exists."""
    # a name the engine would take as a path ('x/..' reaches /containers/json) is no container
    info = engine.container(name) if NAME_OR_ID.match(name) else None
    if info is not None and not isinstance(info, dict):
        info = None
    # the label's value too: io.stackbuild.container=false (or any other) is someone else's container
    if info is None or ((info.get("Config") or {}).get("Labels") or {}).get(LABEL) != "1":
        known = ", ".join(c.name for c in list_containers(engine)) or "none (start one with stackbuild run STACK)"
        what = "no container" if info is None else "not a stackbuild container (use docker directly)"
        raise SelectionError(f"{printable(name)}: {what}; stackbuild's containers: {known}")
    return info


def find_each(engine: ContainerEngine, names: list[str]) -> list[tuple[str, dict]]:
    """Each stackbuild container the names (or ids) give, once, as first named: every one is checked
    before any is touched."""
    found: dict[str, tuple[str, dict]] = {}
    for name in names:
        info = find(engine, name)
        found.setdefault(info.get("Id") or name, (name, info))
    return list(found.values())


def running(engine: ContainerEngine, name: str) -> dict:
    info = find(engine, name)
    if not (info.get("State") or {}).get("Running"):
        raise ContainerError(f"{name} is not running ({(info.get('State') or {}).get('Status', '?')}): "
                             f"docker start {name}, or stackbuild rm {name} and run it again")
    return info


def exec_in(engine: ContainerEngine, name: str, command: list[str], workdir: str | None,
            write: Callable[[bytes | None, bytes | None], None], warn: Callable[[str], None]) -> int:
    """Run a command in a running stackbuild container, its output handed to ``write`` as it comes;
    its exit code. Ctrl-C or SIGTERM stops the command (and whatever it started) before the interrupt
    goes on: the engine alone would leave it running."""
    running(engine, name)
    started = engine.exec_stream(name, command, workdir)
    try:
        for stdout, stderr in started.output:
            write(stdout, stderr)
    except KeyboardInterrupt:
        if not started.stop():
            warn(f"could not stop {printable(command[0])} in {name} (stopping it needs sh and grep in the image): "
                 f"it may still run; docker top {name} lists its processes")
        raise
    return started.exit_code()


def shell_argv(engine: ContainerEngine, name: str, shell: str = "bash") -> list[str]:
    """The `docker exec -it NAME bash` command line for a running stackbuild container."""
    running(engine, name)
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise ContainerError("an interactive shell goes through the docker command, which is not on PATH: install "
                             f"the Docker CLI, or run commands with stackbuild exec {name} -- CMD")
    return [docker_cli, "exec", "-it", name, shell]
