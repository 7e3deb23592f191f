"""The Docker engine, implementing builder/engine/api.py. The only module that imports ``docker``.

Builds go through the SDK's low-level API (the classic builder; builder/engine/buildkit.py builds with BuildKit), streamed:
every chunk becomes a ``BuildEvent``; an error chunk, an HTTP error or a connection that drops
becomes a ``BuildError`` or ``EngineUnavailable`` with what the user needs to act on it.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

import docker
import docker.errors
import docker.types
import docker.utils.config
import requests.exceptions

from .api import BuildEvent, BuildLog, BuildOptions, BuildRequest, Dialect, ExecRun, GpuRequest
from ..errors import BuildError, ConfigError, ContainerError, EngineUnavailable, RegistryError, SelectionError
from ..safety.printable import printable
from ..safety.credentials import redact
from ..safety.files import MAX_JSON_BYTES, open_regular, read_text
from .references import checked_ref
from .site_server import SiteServer

# How registries and the engine word each kind of failure (Docker Hub, distribution/registry, ghcr, ECR).
NOT_FOUND = re.compile(r"manifest unknown|not found|does not exist|name unknown|no such image", re.I)
DENIED = re.compile(r"denied|unauthorized|authentication required|forbidden|\b40[13]\b|no basic auth", re.I)
# How dockerd 20.10 fails on a zstd layer (application/vnd.oci.image.layer.v1.tar+zstd); 23.0 reads zstd.
UNPACK_FAILED = re.compile(r"invalid tar header|unsupported media type|unknown compression|zstd", re.I)
ZSTD_PULL_SINCE = 23
UNREACHABLE = re.compile(r"connection refused|no such host|i/o timeout|dial tcp|timeout|network is unreachable|"
                         r"http response to https client|tls:|x509|connection reset|eof", re.I)


# How a push names the manifest it made, where the engine sends no aux record.
PUSHED_DIGEST = re.compile(r"\bdigest: (sha256:[0-9a-f]{64}) size: \d+")

# Per-layer states worth a line even without byte counts.
LAYER_STATES = ("Pulling fs layer", "Waiting", "Verifying Checksum", "Download complete", "Pull complete",
                "Already exists", "Preparing", "Pushed", "Layer already exists", "Mounted from")


def registry_reason(message: str) -> str:
    """not-found, denied, unreachable or other, from a registry error's text."""
    if UNREACHABLE.search(message):
        return "unreachable"
    if DENIED.search(message):  # Docker Hub says "pull access denied ... does not exist": a denial first
        return "denied"
    if NOT_FOUND.search(message):
        return "not-found"
    return "other"


# How `stackbuild exec` finds what it started in a container, and stops it: every process whose
# environment holds the exec's marker (the command and what it started), SIGTERM, then SIGKILL.
EXEC_MARKER = "STACKBUILD_EXEC_ID"
STOP_MARKED = (
    'marked() { for f in /proc/[0-9]*/environ; do if grep -qzx "' + EXEC_MARKER + '=$1" "$f" 2>/dev/null; '
    'then p=${f#/proc/}; echo "${p%/environ}"; fi; done; }; '
    'pids=$(marked "$1"); [ -n "$pids" ] || exit 0; kill -TERM $pids 2>/dev/null; i=0; '
    'while [ $i -lt 50 ]; do sleep 0.1; pids=$(marked "$1"); [ -n "$pids" ] || exit 0; i=$((i+1)); done; '
    'kill -KILL $pids 2>/dev/null; exit 0'
)


def split_ref(ref: str) -> tuple[str, str]:
    """``repository:tag`` -> (repository, tag); the tag defaults to latest (a port is not a tag);
    ``repository@sha256:…`` -> (repository, the digest), which the engine pulls as such."""
    if "@" in ref:
        repository, _, digest = ref.partition("@")
        return repository, digest
    if ":" in ref.split("/")[-1]:
        repository, _, tag = ref.rpartition(":")
        return repository, tag
    return ref, "latest"


def context_tar(dockerfile: str, files: Iterable[tuple[str, bytes]]) -> io.BytesIO:
    """The build context as an uncompressed tar with fixed metadata, so the same files give the same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("Dockerfile", dockerfile.encode()), *files):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _engine_address() -> tuple[str, str]:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host, "from DOCKER_HOST"
    return "unix:///var/run/docker.sock", "the default socket; DOCKER_HOST is not set"


def _check_client_config() -> None:
    """The Docker client reads its config.json when it starts: a FIFO there would block, /dev/zero fill memory."""
    path = docker.utils.config.find_config_file()
    if not path:
        return
    try:
        os.close(open_regular(path))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise EngineUnavailable(f"cannot use the Docker client configuration {printable(str(path))}: {exc} "
                                "(make it a regular file, or point DOCKER_CONFIG at another folder)") from None


def _cli_context_hint() -> str:
    path = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        current = json.loads(read_text(path, MAX_JSON_BYTES)).get("currentContext")
    except (OSError, ValueError, AttributeError, RecursionError):  # ValueError: not JSON or not UTF-8
        return ""
    if current and current != "default":
        return (f" The docker CLI uses context '{printable(str(current))}', which stackbuild does not follow: "
                "set DOCKER_HOST to its endpoint (`docker context inspect`).")
    return ""


def own_hostname(name: str) -> str:
    """The hostname of a container without a network, which its /etc/hosts maps to 127.0.0.1: the container's
    name where that is a hostname, else "stackbuild". Docker writes no line for the hostname of a container
    without a network, and torch 2.15's torchrun (its rendezvous's TCP store) connects to this host by its
    name: unresolvable, every launch waited 300 s and failed ("The client socket has timed out after
    300000ms while trying to connect to (<container id>, <port>)")."""
    label = name.lower()[:63].strip("-")
    return label if re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", label) else "stackbuild"


class DockerEngine:
    """A connected Docker engine: implements builder/engine/api.py's Engine (builds: the classic builder)."""

    kind = "classic"
    dialect = Dialect()  # site settings from the loopback site server; no cache mounts

    def __init__(self, client: docker.APIClient, address: str):
        self.client = client
        self.address = address
        self._containerd_store: bool | None = None

    @classmethod
    def connect(cls, timeout: int = 600) -> DockerEngine:
        """Connect and ping; EngineUnavailable says what was tried and how to start an engine."""
        address, origin = _engine_address()
        _check_client_config()
        try:
            client = docker.APIClient(version="auto", timeout=timeout, **docker.utils.kwargs_from_env())
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            reason = str(exc).split("\n")[0]
            raise EngineUnavailable(
                f"no Docker engine answered at {address} ({origin}): {reason}. Start one "
                "(`sudo systemctl start docker`; on a machine without one, `bash .ci/harness.sh` in a stackbuild "
                "checkout installs and starts dockerd with a local registry), or point DOCKER_HOST at a running engine."
                + _cli_context_hint()
            ) from None
        return cls(client, address)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except requests.exceptions.ConnectionError as exc:
            raise EngineUnavailable(f"the Docker engine at {self.address} stopped answering during {what}: "
                                    f"{str(exc).splitlines()[0]}") from None

    def version(self) -> str:
        return self._call("version", self.client.version).get("Version", "?")

    def containerd_store(self) -> bool:
        """Whether the engine keeps images in containerd's store (dockerd 24+, containerd-snapshotter on)."""
        if self._containerd_store is None:
            status = self._call("info", self.client.info).get("DriverStatus") or []
            self._containerd_store = any(isinstance(row, list) and row[-1:] == ["io.containerd.snapshotter.v1"]
                                         for row in status)
        return self._containerd_store

    def host_info(self) -> dict:
        info = self._call("info", self.client.info)
        return {"version": self.version(), "address": self.address,
                "runtimes": tuple(sorted((info.get("Runtimes") or {}).keys())), "root_dir": info.get("DockerRootDir")}

    def image(self, ref: str) -> dict | None:
        """`docker image inspect`, or None when the engine has no such image."""
        checked_ref(ref)
        try:
            return self._call("image inspect", self.client.inspect_image, ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise BuildError(f"cannot inspect image {ref}: {exc.explanation or exc}") from None

    def labels(self, ref: str) -> dict[str, str]:
        """An image's labels; SelectionError when the engine has no such image."""
        info = self.image(ref)
        if info is None:
            raise SelectionError(f"image {ref} is not on this engine (pull or build it first; `docker images` lists "
                                 "what is there)")
        return dict((info.get("Config") or {}).get("Labels") or {})

    def pull(self, ref: str, on_event: Callable[[BuildEvent], None] | None = None) -> None:
        """Pull an image with per-layer events, reading every chunk (the SDK reports errors in chunks)."""
        repository, tag = split_ref(checked_ref(ref))
        try:
            self._transfer(ref, "pull", lambda: self.client.pull(repository, tag=tag, stream=True, decode=True),
                           on_event)
        except RegistryError as exc:
            if exc.reason != "other" or not UNPACK_FAILED.search(str(exc)):
                raise
            version = self.version()
            major = re.match(r"(\d+)\.", version)
            if not major or int(major[1]) >= ZSTD_PULL_SINCE:
                raise
            # dockerd before 23 unpacks only gzip (or plain) layers and says no more than this
            raise RegistryError(f"{exc}: this engine, Docker {version}, cannot unpack zstd-compressed layers, which "
                                f"stackbuild's published images have; Docker {ZSTD_PULL_SINCE} or later pulls them",
                                "zstd") from None

    def push(self, ref: str, on_event: Callable[[BuildEvent], None] | None = None) -> str:
        """Push one tag with per-layer events; returns the manifest digest the registry gave it.

        The SDK's push never raises for a registry error: it arrives as a chunk, so every chunk is read.
        """
        repository, tag = split_ref(checked_ref(ref))
        aux = self._transfer(ref, "push", lambda: self.client.push(repository, tag=tag, stream=True, decode=True),
                             on_event)
        # An engine on the containerd image store (dockerd 24+) sends no aux record: only the status
        # line "<tag>: digest: sha256:... size: N".
        digest = aux.get("Digest", "") or aux.get("status_digest", "")
        if not digest:
            raise RegistryError(f"cannot push {ref}: the registry confirmed no digest")
        return digest

    def _transfer(self, ref: str, what: str, start: Callable, on_event: Callable[[BuildEvent], None] | None) -> dict:
        """Read a pull or push stream to its end: layer events, the aux record, errors as RegistryError."""
        aux: dict = {}
        try:
            for chunk in self._call(what, start):
                if "error" in chunk or "errorDetail" in chunk:
                    detail = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or "unknown error"
                    raise RegistryError(f"cannot {what} {ref}: {detail}", registry_reason(detail))
                if isinstance(chunk.get("aux"), dict):
                    aux.update(chunk["aux"])
                status = chunk.get("status")
                pushed = PUSHED_DIGEST.search(status) if isinstance(status, str) else None
                if pushed:
                    aux.setdefault("status_digest", pushed.group(1))
                if on_event and status:
                    detail = chunk.get("progressDetail") or {}
                    if chunk.get("id") and (detail or status.startswith(LAYER_STATES)):
                        on_event(BuildEvent("layer", status, layer=chunk["id"], done=int(detail.get("current") or 0),
                                            size=int(detail.get("total") or 0)))
                    else:
                        on_event(BuildEvent("output", f"{chunk.get('id', '')} {status}".strip()))
        except docker.errors.APIError as exc:
            detail = str(exc.explanation or exc)
            reason = "not-found" if exc.status_code == 404 else registry_reason(detail)
            raise RegistryError(f"cannot {what} {ref}: {detail}", reason) from None
        return aux

    def remote_digest(self, ref: str) -> str | None:
        """The digest a registry gives ``ref`` now, without pulling it; None when it cannot be asked."""
        try:
            info = self._call("distribution inspect", self.client.inspect_distribution, checked_ref(ref))
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return None
        return ((info or {}).get("Descriptor") or {}).get("digest")

    def untag(self, ref: str) -> None:
        """Remove one name of an image (the image stays while another name holds it)."""
        try:
            self._call("image remove", self.client.remove_image, checked_ref(ref), noprune=False)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 404:
                raise RegistryError(f"cannot remove {ref}: {exc.explanation or exc}") from None

    def base_identity(self, ref: str, pull: bool, on_event: Callable[[BuildEvent], None] | None = None) -> str:
        """The base reference with its digest (pulling it first when absent or when asked)."""
        identity = None if pull else self.local_identity(ref)
        if identity is None:
            self.pull(ref, on_event)
            identity = self.local_identity(ref)
            if identity is None:
                raise BuildError(f"pulled {ref} but the engine does not have it")
        return identity

    def local_identity(self, ref: str) -> str | None:
        """``ref@digest`` of an image this engine has (its registry digest, else its id), or None."""
        info = self.image(ref)
        if info is None:
            return None
        digests = [d for d in info.get("RepoDigests") or [] if "@" in d]
        return f"{ref}@{digests[0].split('@', 1)[1]}" if digests else f"{ref}@{info['Id']}"

    def check_options(self, options: BuildOptions) -> None:
        """The classic builder has no build secrets, registry cache or zstd layers; site settings need host networking."""
        if options.site and options.network != "host":
            raise ConfigError(
                f"site settings ({', '.join(sorted(options.site))}) reach a classic build from a loopback server, "
                f"which needs host networking, but build_network is '{options.network or 'default'}': set "
                "STACKBUILD_BUILD_NETWORK=host or pass --network host (or build with --engine buildkit, which "
                "passes them as a build secret)")
        if options.cache_from or options.cache_to:
            raise ConfigError("--cache-from/--cache-to need the BuildKit engine (--engine buildkit, with the "
                              "`docker buildx` plugin); the classic builder has no registry cache")
        if options.compression != "gzip":
            raise ConfigError(f"compression {options.compression} needs the BuildKit engine on containerd's image "
                              "store (--engine buildkit); the classic builder stores gzip layers")

    def build(self, request: BuildRequest, log: BuildLog, on_event: Callable[[BuildEvent], None]) -> str:
        """Build and tag one image; returns its id. Raises BuildError with the failing step.

        Site settings are served by the loopback site server for as long as the build runs.
        """
        self.check_options(request.options)
        with SiteServer(request.options.site):
            return self._build(request, log, on_event)

    def _build(self, request: BuildRequest, log: BuildLog, on_event: Callable[[BuildEvent], None]) -> str:
        options = request.options
        stream = self._call(
            "build", self.client.build,
            fileobj=context_tar(request.dockerfile, request.files), custom_context=True, encoding=None,
            tag=request.tag, labels=request.labels, network_mode=options.network, nocache=options.nocache, rm=True,
            forcerm=True, decode=True, buildargs=options.buildargs,
        )
        image_id = ""
        try:
            for chunk in stream:
                if "errorDetail" in chunk or "error" in chunk:
                    message = chunk.get("errorDetail", {}).get("message") or chunk.get("error") or "unknown error"
                    message = redact(str(message))
                    log.lines.append(message)
                    raise log.step_error(message)
                if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                text = chunk.get("stream") or chunk.get("status") or ""
                for line in text.splitlines():
                    log.record(line, on_event)
        except KeyboardInterrupt:
            # Dropping the connection makes the engine cancel the build; forcerm removes its container.
            self.client.close()
            raise
        except requests.exceptions.ConnectionError as exc:
            raise EngineUnavailable(f"the Docker engine at {self.address} went away during the build: "
                                    f"{str(exc).splitlines()[0]}") from None
        except docker.errors.APIError as exc:
            raise BuildError(f"the engine refused the build: {exc.explanation or exc}") from None
        if not image_id:
            found = re.search(r"Successfully built ([0-9a-f]+)", "\n".join(log.lines[-5:]))
            image_id = found.group(1) if found else ""
        if not image_id:
            raise BuildError("the engine ended the build without an image id")
        on_event(BuildEvent("done", image_id))
        return image_id

    def start_container(self, image: str, name: str, labels: dict[str, str], gpus: GpuRequest | None,
                        shm_size: str | None = None, *, network: str = "none", binds: list[str] | None = None,
                        volumes: dict[str, str] | None = None, env: dict[str, str] | None = None,
                        workdir: str | None = None, ports: dict[str, int | None] | None = None,
                        user: str | None = None, ipc_host: bool = False,
                        ulimits: dict[str, int] | None = None, init: bool = True,
                        lifetime_s: int | None = None) -> str:
        """Start a long-lived container (its command just waits) and return its id.

        ``gpus`` is the device request (from the target's entry, or --gpus), None for no GPU.
        ``volumes`` maps named volumes to paths; ``binds`` are ``SRC:DST[:ro]``; ``ulimits`` maps a
        limit's name to its soft and hard value (-1: unlimited); ``init`` runs an init process as PID 1.
        ``lifetime_s`` bounds the wait: the container stops by itself after that many seconds (None:
        it waits until stopped). Nothing created is left behind when it fails.
        """
        device_requests = None
        if gpus is not None:
            device_requests = [docker.types.DeviceRequest(count=gpus.count, device_ids=gpus.device_ids,
                                                          capabilities=[list(gpus.capabilities)])]
        all_binds = list(binds or []) + [f"{volume}:{path}" for volume, path in (volumes or {}).items()]
        limits = [docker.types.Ulimit(name=k, soft=v, hard=v) for k, v in (ulimits or {}).items()] or None
        hostname = own_hostname(name) if network == "none" else None
        host_config = self.client.create_host_config(
            network_mode=network, device_requests=device_requests, shm_size=None if ipc_host else shm_size,
            ipc_mode="host" if ipc_host else None, init=init, binds=all_binds or None, ulimits=limits,
            port_bindings=ports or None, extra_hosts={hostname: "127.0.0.1"} if hostname else None)
        wait = ["sleep", str(lifetime_s) if lifetime_s else "infinity"]
        try:
            created = self._call("container create", self.client.create_container, image,
                                 command=wait, name=name, labels=labels, host_config=host_config,
                                 environment=env or None, working_dir=workdir, user=user,
                                 ports=list(ports) if ports else None, hostname=hostname)
        except docker.errors.ImageNotFound:
            raise ContainerError(f"image {image} is not on this engine (build or pull it first)") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise ContainerError(f"a container named {name} already exists: use it (stackbuild shell {name}), "
                                     f"or remove it first (stackbuild rm {name})") from None
            raise ContainerError(f"cannot create a container from {image}: {exc.explanation or exc}") from None
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM while the engine created it: not left behind
            found = self.container(name)
            if found and (found.get("Config") or {}).get("Labels") == labels and \
                    (found.get("State") or {}).get("Status") == "created":
                self.remove_container(found["Id"])
            raise
        try:
            self._call("container start", self.client.start, created["Id"])
        except KeyboardInterrupt:
            self.remove_container(created["Id"])
            raise
        except docker.errors.APIError as exc:
            self.remove_container(created["Id"])
            hint = (" (this host has no NVIDIA container runtime: use --gpus none)"
                    if device_requests and "capabilities" in str(exc.explanation) else "")
            raise ContainerError(f"cannot start a container from {image}: {exc.explanation or exc}{hint}") from None
        return created["Id"]

    def containers(self, label: str) -> list[dict]:
        """The containers (running or not) that carry ``label``, as `docker inspect` gives them; one removed
        between the list and its inspect (a --rm container that just finished) is gone, not an error."""
        found = self._call("container list", self.client.containers, all=True, filters={"label": label})
        return [info for info in (self.container(c["Id"]) for c in found) if info is not None]

    def container(self, name: str) -> dict | None:
        """`docker container inspect`, or None when there is no such container."""
        try:
            return self._call("container inspect", self.client.inspect_container, name)
        except docker.errors.NotFound:
            return None

    def stop_container(self, container: str, timeout: int = 10) -> None:
        try:
            self._call("container stop", self.client.stop, container, timeout=timeout)
        except docker.errors.APIError as exc:
            raise ContainerError(f"cannot stop {container}: {exc.explanation or exc}") from None

    def exec_stream(self, container: str, command: list[str], workdir: str | None = None) -> ExecRun:
        """Run a command in a running container: its output as it comes, its exit code, how to stop it.

        The command's processes carry ``STACKBUILD_EXEC_ID=<random>`` in their environment (their
        children inherit it): ``stop`` finds them by it from a second exec, as root, and sends
        SIGTERM, then SIGKILL to those still there after 5 seconds.
        """
        marker = secrets.token_hex(12)
        try:
            exec_id = self._call("exec", self.client.exec_create, container, command, workdir=workdir,
                                 environment={EXEC_MARKER: marker})["Id"]
        except docker.errors.APIError as exc:
            raise ContainerError(f"cannot run a command in {container}: {exc.explanation or exc}") from None

        def stop() -> bool:
            return self._stop_exec(container, marker)

        try:
            stream = self._call("exec", self.client.exec_start, exec_id, stream=True, demux=True)
        except KeyboardInterrupt:  # the engine may have started it before the answer came
            stop()
            raise
        return ExecRun(stream, lambda: self._call("exec inspect", self.client.exec_inspect, exec_id)["ExitCode"],
                       stop)

    def _stop_exec(self, container: str, marker: str) -> bool:
        """Stop every process of a container whose environment holds the marker; False when it could not."""
        try:
            stopper = self.client.exec_create(container, ["sh", "-c", STOP_MARKED, "stop", marker], user="0")
            self.client.exec_start(stopper["Id"])
            return self.client.exec_inspect(stopper["Id"]).get("ExitCode") == 0
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return False

    def exec_lines(self, container: str, command: list[str]) -> tuple[Iterable[str], Callable[[], int]]:
        """Run a command in a container; (its output lines as they come, a function giving its exit code)."""
        exec_id = self._call("exec", self.client.exec_create, container, command)["Id"]
        stream = self._call("exec", self.client.exec_start, exec_id, stream=True, demux=False)

        def lines():
            pending = b""
            for chunk in stream:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", "replace")
            if pending:
                yield pending.decode("utf-8", "replace")

        return lines(), lambda: self._call("exec inspect", self.client.exec_inspect, exec_id)["ExitCode"]

    def build_cache(self) -> list[dict]:
        """BuildKit's build cache records on this engine, as `docker system df -v` lists them (ID,
        Parents, Description, CreatedAt, InUse, Shared, Size)."""
        return self._call("build cache list", self.client.df).get("BuildCache") or []

    def prune_build_cache(self, select: Callable[[dict], bool]) -> list[dict]:
        """Prune the build cache records ``select`` picks, by id, and return those of them left.

        BuildKit keeps a build's layers as records after its image is removed (a --no-cache build's
        torch is gigabytes). A record in use, or shared with an image, is never picked; one that is
        another's parent is refused until its child is gone, so this prunes leaves first, round
        after round while any goes.
        """
        def picked() -> list[dict]:
            return [r for r in self.build_cache() if select(r) and not r.get("InUse") and not r.get("Shared")]

        left = picked()
        while left:
            for record in left:  # one id a call: the engine takes one value a filter
                try:
                    self._call("build cache prune", self.client.prune_builds, filters={"id": record["ID"]})
                except docker.errors.APIError as exc:
                    raise BuildError(f"cannot prune build cache record {record['ID']} on {self.address}: "
                                     f"{exc.explanation or exc}") from None
            after = picked()
            if len(after) >= len(left):
                return after
            left = after
        return []

    def remove_container(self, container: str) -> None:
        try:
            self._call("container remove", self.client.remove_container, container, force=True)
        except docker.errors.NotFound:
            pass

    def tag(self, image: str, ref: str) -> None:
        repository, _, tag = checked_ref(ref).rpartition(":")
        self._call("tag", self.client.tag, image, repository, tag=tag, force=True)

    def close(self) -> None:
        self.client.close()
