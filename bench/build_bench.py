"""Build benchmark: the classic builder and BuildKit side by side on one stack, in one run.

Run on the CI host (see README: a dockerd, its buildx plugin, the local registry, and the second
engine .ci/engine26.sh starts), with the settings a build needs there:

    STACKBUILD_BUILD_NETWORK=host STACKBUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \\
        python bench/build_bench.py [STACK@RELEASE | --profile FILE] [--pin NAME=VERSION]

Every build goes through stackbuild's own code (build_image with an engine from engines.connect;
the second engine is reached the way users reach one, through DOCKER_HOST), so it measures the
product. Three columns: the classic builder and BuildKit (v0.8, the docker driver) on the default
engine (dockerd 20.10, overlay2), and BuildKit on the second engine (dockerd 26, containerd image
store), which alone can export a registry cache of its own (mode=max) and push zstd layers.

1. cold build: classic with --no-cache; BuildKit with --no-cache after pruning that engine's cache
   mounts (`docker builder prune -f --filter type=exec.cachemount`), so pip downloads everything.
2. no-change rebuild, twice: as `stackbuild build` does it (the content tag is found: nothing to
   build), and through the engine with every step cached (the build the content tag saves).
3. rebuild after bumping one top-level pin (a profile copy with the pin changed, locked again from
   the committed lock, as `stackbuild lock` does: its versions preferred; made days earlier, so the
   index's view of the release's date has grown since; --relock-upgrade locks afresh instead; the
   table says what the relock moved and which lock sections rebuild):
   seconds, ratio to cold (goal <= 5 %), and what the rebuilt steps downloaded: the bytes the host's
   network interfaces received during the build (builds use host networking: every tool's
   downloads), and the downloads the build log names (pip: "Downloading FILE (12.3 MB)", "Using
   cached FILE" a cache hit; uv, which installs the locked layers: "Downloading NAME (1.2MiB)",
   files over 1 MiB only, no line for a cache hit). Goal under BuildKit: nothing downloaded again
   that the cold build had downloaded.
4. a fresh engine with only the registry cache, on the second engine: its cold build (--no-cache,
   after `docker builder prune -af` there), the registry cache exported (--cache-to REF, mode=max;
   a build of the same context, every step cached, so the export is timed on its own), the image
   removed and the build cache pruned again (that engine only), then the build with --cache-from
   REF alone (goal <= 10 % of that engine's cold build). The same again with zstd (after the zstd
   image of 5.): the cache exported with zstd layers, then a fresh engine's build from it alone, with
   the compression setting zstd. The base image stays: not the bench's.
5. push and pull, gzip vs zstd, on the second engine, each pushed with the SDK push `stackbuild
   push` uses: gzip is the cold build's image, pushed before the cache export (the cache holds the
   same gzip blobs: pushed after it, the image would find them all in the registry); zstd is the
   same context built with the compression setting zstd after the fresh-engine build (every step
   cached: that build is the recompression, timed on its own), then pushed. Each is pulled back
   into the second engine after its images and build cache are removed. Bytes pushed: the sum of
   the image manifest's layer sizes, read from the registry.
6. disk: the `stackbuild/<stack>:<release>-cpu` images on the default engine (the integration
   tests build them), the union of their layers against the largest image's own layers (goal
   <= 1.6x). Measured from the engine's layer store: overlay2 stores each layer once per chain ID
   (first: the diffID; then sha256 of "<previous chain ID> <diffID>") and records its size in
   <DockerRootDir>/image/overlay2/layerdb/sha256/<chainID>/size, so the union over the chosen
   images is exact. `docker system df -v` is not: its shared size counts sharing with every
   other image on the engine (the bench's, other checkouts', test images), not within the set.

It prints a table with figures and ratios (what was measured, on failure too), and the machine's
cores and load at the start and the end. Classic builds take /tmp/stackbuild-build.lock (one
classic build at a time on a host: the site server's port); the wait is not timed. A cold build
starts only with --min-free-gb free on /, and the run stops, cleaning up, when free space falls
under --disk-floor-gb (the engines and the registry share the disk; a 2026.11 cpu image is about
9 GB on each engine). --tiny swaps the Dockerfile for a two-step one that installs only the
bumped package, to try the bench's mechanics in minutes. Everything it makes is tagged
stackbuild-bench/* or pushed under <registry>/stackbuild-bench/*, and removed at the end, on
failure too: its images, its registry manifests (the registry frees their blobs only at its next
garbage-collect), the build cache records its BuildKit builds made on the default engine (by id:
records new since it started and made while one of its builds ran; the engine's other cache
stays), and the second engine's build cache.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from _shared import build_lock as host_build_lock  # (importing _shared puts the checkout on sys.path)

from builder.engine import connect as engines
from builder.plan import labels as schema  # noqa: E402
from builder.images.build import BuildResult, build_context, build_image, build_options  # noqa: E402
from builder.cli.catalog import list_stacks  # noqa: E402
from builder.config import Settings, load_settings  # noqa: E402
from builder.engine.api import BuildEvent, BuildLog  # noqa: E402
from builder.errors import BuildError  # noqa: E402
from builder.lock.resolution import lock_and_write  # noqa: E402
from builder.plan.build_plan import lock_path, plan_build  # noqa: E402
from builder.profile.load import load_stack, stack_path  # noqa: E402
from builder.render.dockerfile import BuildContext, prepare  # noqa: E402

LABEL = {"io.stackbuild.bench": "1"}
ENGINE26 = "unix:///run/stackbuild-engine26/docker.sock"
# pip's download log: "Downloading torch-2.10.0-...whl (104.1 MB)" / "Using cached six-1.17.0-...whl (11 kB)";
# uv's (the locked layers after [bootstrap]): "Downloading torch (868.7MiB)", files over 1 MiB only, and no
# line for a cache hit: the host's received bytes (NetCount) count every download
PIP_LINE = re.compile(r"^\s*(Downloading|Using cached) (\S+)(?: \(([\d.]+) ?(bytes|kB|MB|GB|KiB|MiB|GiB)\))?")
UNITS = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
MANIFESTS = ", ".join(("application/vnd.oci.image.index.v1+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json",
                       "application/vnd.oci.image.manifest.v1+json",
                       "application/vnd.docker.distribution.manifest.v2+json"))
INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


# ---------------------------------------------------------------------------------------------
# What a build did
# ---------------------------------------------------------------------------------------------

@dataclass
class PipTally:
    """pip's downloads and cache hits in one build's log, by file name, with their sizes."""

    downloaded: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)

    def feed(self, line: str) -> None:
        found = PIP_LINE.match(line)
        if not found:
            return
        name = found[2].rstrip("/").rsplit("/", 1)[-1].split("#", 1)[0]  # a URL from another index: its file
        size = int(float(found[3]) * UNITS[found[4]]) if found[3] else 0
        (self.downloaded if found[1] == "Downloading" else self.cached)[name] = size

    @staticmethod
    def package(name: str) -> str:
        return re.split(r"-\d", name, maxsplit=1)[0].lower().replace("_", "-")


def received_bytes() -> int:
    """Bytes the host's network interfaces received so far (not loopback, Docker's bridges or veths):
    builds here run with host networking, so a build's downloads are the growth of this count."""
    total = 0
    with open("/proc/net/dev") as handle:
        for line in handle.readlines()[2:]:
            name, _, fields = line.partition(":")
            if not name.strip().startswith(("lo", "docker", "veth", "br-")):
                total += int(fields.split()[0])
    return total


@dataclass
class Run:
    seconds: float
    result: BuildResult | None = None
    pip: PipTally = field(default_factory=PipTally)
    notes: list[str] = field(default_factory=list)
    received: int | None = None  # bytes the host received during the build (every download, any tool)


def mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB" if size < 1e9 else f"{size / 1e9:,.2f} GB"


def free_disk(need: float, what: str) -> None:
    """Refuse to start a cold build that would fill the host's disk (the engines and the registry share /)."""
    free = shutil.disk_usage("/").free / 1e9
    if free < need:
        raise SystemExit(f"not starting {what}: {free:.1f} GB free on /, the bench wants {need:.0f} GB "
                         "(--min-free-gb)")


class DiskWatch:
    """Stops the run (through its cleanup) when the host's disk runs low while a build fills it."""

    def __init__(self, floor: float):
        self.floor = floor
        self.tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(5):
            free = shutil.disk_usage("/").free / 1e9
            if free < self.floor:
                print(f"\n{free:.1f} GB free on / (floor {self.floor:.0f} GB, --disk-floor-gb): stopping the run",
                      flush=True)
                self.tripped = True
                os.kill(os.getpid(), signal.SIGINT)  # a signal: it also ends a wait for the build lock
                return


def tiny(context: BuildContext, package: str) -> BuildContext:
    """--tiny: the same plan and context files, a Dockerfile of one apt and one pip step (installing
    ``package`` at the plan's pin) to try the bench's mechanics in minutes; its figures mean nothing."""
    plan = context.plan
    step = "RUN . /opt/stackbuild/site.sh && site_begin"
    dockerfile = f"""FROM {plan.target.base.ref}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY site.sh /opt/stackbuild/site.sh
{step} && apt-get update && apt-get install -y --no-install-recommends python3-venv \\
 && rm -rf /var/lib/apt/lists/* && site_end
{step} && python3 -m venv /opt/venv && /opt/venv/bin/pip install {package}=={plan.pins[package]} && site_end
COPY manifest.json /opt/stackbuild/manifest.json
"""
    return replace(context, dockerfile=dockerfile)


def host_load() -> str:
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = "load average: " + ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    free = shutil.disk_usage("/").free
    return f"{os.cpu_count()} cores; {uptime}; {mb(free)} free on /"


def build_lock(engine) -> contextlib.AbstractContextManager:
    """The host's build lock for an engine whose builds serve site settings from the loopback server
    (one port: one such build at a time on a host); nothing for an engine that passes them as a secret."""
    return host_build_lock() if engine.dialect.site_secret is None else contextlib.nullcontext(0.0)


# ---------------------------------------------------------------------------------------------
# Engines, the registry, the layer store
# ---------------------------------------------------------------------------------------------

def bench_name(ref: str) -> bool:
    """Whether an image name is one of the bench's: stackbuild-bench/..., or REGISTRY/stackbuild-bench/..."""
    repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    return repository.startswith("stackbuild-bench/") or "/stackbuild-bench/" in repository


class Engines:
    """The three columns' engines, what the bench made on each, and how to clean it up."""

    def __init__(self, engine26: str):
        self.classic = engines.connect(3600, kind="classic")
        self.buildkit = engines.connect(3600, kind="buildkit")
        self.engine26_address = engine26
        saved = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = engine26  # how a user points stackbuild at another engine
        try:
            self.engine26 = engines.connect(3600, kind="buildkit")
        finally:
            if saved is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = saved
        self.made: dict[str, list[str]] = {self.classic.address: [], engine26: []}
        self.min_free = 0.0
        self.cache_records = self.build_cache_ids()
        self.windows: list[tuple[float, float]] = []  # when the bench's BuildKit builds ran on the default engine

    def address(self, engine) -> str:
        return self.engine26_address if engine is self.engine26 else self.classic.address

    def docker(self, address: str, *args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_HOST": address}
        env.pop("BUILDX_BUILDER", None)
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)

    def prune(self, address: str, *args: str) -> str:
        proc = self.docker(address, "builder", "prune", "-f", *args)
        if proc.returncode != 0:
            raise RuntimeError(f"docker builder prune {' '.join(args)} failed on {address}: {proc.stderr.strip()}")
        return (proc.stdout.strip().splitlines() or [""])[-1]

    def build_cache_ids(self) -> set[str]:
        return {record["ID"] for record in self.classic.build_cache()}

    @contextlib.contextmanager
    def window(self, engine):
        """Notes when a BuildKit build of the bench runs on the default engine (its cache records' time)."""
        started = time.time()
        try:
            yield
        finally:
            if engine is self.buildkit:
                self.windows.append((started - 2, time.time() + 2))

    def own_records(self) -> list[dict]:
        """The default engine's build cache records that the bench's builds made: new since it started,
        and created while one of its BuildKit builds ran (another build's records of those minutes too,
        which a host with one build at a time does not have)."""
        found = []
        for record in self.classic.build_cache():
            created = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?", record.get("CreatedAt") or "")
            if record["ID"] in self.cache_records or not created:
                continue
            when = (datetime.datetime.fromisoformat(created[1]).replace(tzinfo=datetime.timezone.utc).timestamp()
                    + float(f"0.{created[2] or 0}"))
            if any(start <= when <= end for start, end in self.windows):
                found.append(record)
        return found

    def remove_images(self, address: str) -> None:
        """The names the bench gave, and any image with its label under a stackbuild-bench name (a build
        that failed after tagging)."""
        engine = self.classic if address == self.classic.address else self.engine26
        names = list(self.made[address])
        with contextlib.suppress(Exception):
            for image in engine.client.images(filters={"label": "io.stackbuild.bench=1"}):
                names += [t for t in image.get("RepoTags") or [] if bench_name(t)]
        for tag in dict.fromkeys(reversed(names)):
            try:
                engine.client.remove_image(tag, force=True)
            except Exception as exc:  # noqa: BLE001 - gone already, or a failed cleanup: say so, carry on
                if "No such image" not in str(exc) and "not found" not in str(exc):
                    print(f"could not remove {tag}: {exc}", file=sys.stderr)
        self.made[address].clear()

    def cleanup_default(self) -> None:
        """The bench's images on the default engine, and the build cache records its builds added there
        (by id: the records that were there before, other builds' cache, stay)."""
        self.remove_images(self.classic.address)
        own = {record["ID"] for record in self.own_records()}
        try:
            self.classic.prune_build_cache(lambda record: record["ID"] in own)
        except BuildError as exc:
            print(exc, file=sys.stderr)
        left = self.own_records()
        if left:
            print(f"note: {len(left)} build cache records ({mb(sum(r.get('Size') or 0 for r in left))}) made while the "
                  "bench built stay on the default engine (in use, or another build's)", file=sys.stderr)

    def cleanup_engine26(self) -> None:
        self.remove_images(self.engine26_address)
        try:
            self.prune(self.engine26_address, "-a")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"could not prune the second engine's build cache: {exc}", file=sys.stderr)


class Registry:
    """The bench's manifests in a plain (distribution) registry: what was pushed, its size, its removal."""

    def __init__(self, address: str):
        self.address = address
        self.pushed: list[str] = []

    def _request(self, method: str, path: str, accept: str = MANIFESTS):
        request = urllib.request.Request(f"http://{self.address}/v2/{path}", method=method,
                                         headers={"Accept": accept})
        return urllib.request.urlopen(request, timeout=60)  # noqa: S310 - the local registry, plain http

    def manifest(self, ref: str, reference: str | None = None) -> tuple[dict, str]:
        repository, tag = self.split(ref)
        with self._request("GET", f"{repository}/manifests/{reference or tag}") as response:
            return json.loads(response.read()), response.headers.get("Docker-Content-Digest", "")

    def image_layers(self, ref: str) -> list[dict]:
        """The layers of the linux/amd64 image under ``ref`` (an index's attestations left out)."""
        manifest, _ = self.manifest(ref)
        if manifest.get("mediaType") in INDEXES or "manifests" in manifest:
            images = [m for m in manifest["manifests"]
                      if (m.get("platform") or {}).get("architecture") == "amd64"
                      and (m.get("platform") or {}).get("os") == "linux"]
            manifest, _ = self.manifest(ref, images[0]["digest"])
        return manifest.get("layers") or []

    def delete(self, ref: str) -> None:
        repository, _ = self.split(ref)
        manifest, digest = self.manifest(ref)
        children = [m["digest"] for m in manifest.get("manifests") or [] if "manifest" in m.get("mediaType", "")]
        for target in (digest, *children):
            try:
                self._request("DELETE", f"{repository}/manifests/{target}").close()
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise

    def cleanup(self) -> None:
        for ref in dict.fromkeys(self.pushed):
            try:
                self.delete(ref)
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                if not (isinstance(exc, urllib.error.HTTPError) and exc.code == 404):
                    print(f"could not delete {ref} from the registry: {exc}", file=sys.stderr)

    def split(self, ref: str) -> tuple[str, str]:
        name = ref[len(self.address) + 1:] if ref.startswith(self.address + "/") else ref
        repository, _, tag = name.rpartition(":")
        return repository, tag


def chain_ids(diff_ids: list[str]) -> list[str]:
    """overlay2's layer directories, one per chain ID: the first is its diffID, the next hash the one before."""
    chains: list[str] = []
    for diff in diff_ids:
        chains.append(diff if not chains else "sha256:" + hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest())
    return chains


@dataclass
class ImageLayers:
    name: str
    base: str  # the base image it was built on (its io.stackbuild.base label, without the digest)
    layers: dict[str, int]  # chain ID -> the layer's size in the layer store

    @property
    def size(self) -> int:
        return sum(self.layers.values())


def union(images: list[ImageLayers]) -> int:
    """The bytes a set of images takes in the layer store: each chain ID once."""
    return sum({chain: size for image in images for chain, size in image.layers.items()}.values())


def cpu_images_disk(engine) -> tuple[list[ImageLayers], list[str], str | None]:
    """(each present stackbuild/<stack>:<release>-cpu image with its layers, the missing ones, a problem
    that stopped the measurement)."""
    info = engine.client.info()
    if info.get("Driver") != "overlay2":
        return [], [], f"the default engine's storage driver is {info.get('Driver')}, not overlay2"
    layerdb = Path(info.get("DockerRootDir") or "/var/lib/docker") / "image" / "overlay2" / "layerdb" / "sha256"
    present, missing = [], []
    for stack in list_stacks():
        for release in stack["releases"]:
            if "cpu" not in release["targets"]:
                continue
            name = f"stackbuild/{stack['name']}:{release['name']}-cpu"
            image = engine.image(name)
            if image is None:
                missing.append(name)
                continue
            layers = {}
            for chain in chain_ids(image["RootFS"]["Layers"]):
                try:
                    layers[chain] = int((layerdb / chain.split(":", 1)[1] / "size").read_text())
                except OSError as exc:
                    return [], [], f"cannot read {layerdb}: {exc.strerror or exc} (run as root, on the engine's host)"
            base = ((image.get("Config") or {}).get("Labels") or {}).get(schema.BASE, "?").split("@", 1)[0]
            found = ImageLayers(name, base, layers)
            if found.size != image.get("Size"):
                print(f"note: {name}: its layers add up to {found.size} bytes, `docker image inspect` says "
                      f"{image.get('Size')}")
            present.append(found)
    return present, missing, None


# ---------------------------------------------------------------------------------------------
# Builds
# ---------------------------------------------------------------------------------------------

def bumped_profile(profile: Path, pin: str, folder: Path, release: str | None, target: str, settings: Settings,
                   upgrade: bool = False) -> tuple[Path, list[str]]:
    """A copy of the profile with one pin changed (name==old -> name==new), locked again beside it
    from the committed lock, as `stackbuild lock` does today (its versions preferred; all afresh with
    ``upgrade``); and what the relock moved, as lines for the table."""
    name, new = pin.split("=", 1)
    text = profile.read_text()
    pattern = re.compile(rf"(- {re.escape(name)}==)([^\s]+)")
    if not pattern.search(text):
        raise SystemExit(f"{name} is not pinned in {profile}")
    path = folder / profile.name
    path.write_text(pattern.sub(rf"\g<1>{new}", text))
    original = plan_build(load_stack(str(profile)), release, target, with_lock=False)
    plan = plan_build(load_stack(str(path)), release, target, with_lock=False)
    if lock_path(original).is_file():  # the committed lock, made earlier: the index's view has grown since
        lock_path(plan).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lock_path(original), lock_path(plan))
    relocked = lock_and_write(plan, settings, upgrade=upgrade)  # a bump is a profile edit plus `stackbuild lock`
    how = "--upgrade: afresh" if upgrade else "preferring the committed lock's versions"
    if relocked.changes is None:
        return path, [f"relock ({how}): no committed lock to start from"]
    moved = [f"[{key}] {n} {a or '-'} -> {b or '-'}" for key, rows in relocked.changes.sections for n, a, b in rows]
    return path, [f"relock ({how}) moved: {'; '.join(moved) or 'nothing'}",
                  f"  lock sections that rebuild: {', '.join(relocked.changes.rebuilt) or 'none'}"]


def build(bench: Engines, engine, context: BuildContext, settings: Settings, tag: str, **options) -> Run:
    """One build_image call, timed without the wait for the build lock, its pip log tallied."""
    tally, notes = PipTally(), []

    def on_event(event: BuildEvent) -> None:
        if event.kind == "output":
            tally.feed(event.text)
        elif event.kind in ("note", "warning"):
            notes.append(event.text)
        elif event.kind == "step":
            print(f"    {time.monotonic() - started:7.1f} s  step {event.step}/{event.total} {event.text[:60]}",
                  flush=True)

    address = bench.address(engine)
    bench.made[address].append(tag)
    started = time.monotonic()
    with build_lock(engine), bench.window(engine):
        started, before = time.monotonic(), received_bytes()
        result = build_image(context, settings, engine=engine, extra_tags=(tag,), extra_labels=LABEL,
                             use_registry=False, on_event=on_event, **options)
        seconds, received = time.monotonic() - started, received_bytes() - before
    bench.made[address] += [result.ref.moving, result.ref.immutable]
    return Run(seconds, result, tally, notes, received)


def cached_rebuild(bench: Engines, engine, context: BuildContext, settings: Settings, image: str, tag: str) -> Run:
    """The engine's build of an unchanged context (what the content tag spares `stackbuild build`):
    build_image's own build step (build_context, with build_image's options) and the labels of the image
    built before."""
    labels = engine.labels(image)
    labels = {key: labels[key] for key in schema.BUILT if key in labels}
    bench.made[bench.classic.address].append(tag)
    log, events = BuildLog(), []
    with build_lock(engine), bench.window(engine):
        started = time.monotonic()
        build_context(engine, context, tag, {**labels, **LABEL}, build_options(settings), log, events.append)
        seconds = time.monotonic() - started
    steps = [e for e in events if e.kind == "step"]
    cached = sum(e.kind == "cached" for e in events)
    return Run(seconds, notes=[f"{cached} of {len(steps)} steps cached"])


def timed_pull(bench: Engines, ref: str) -> tuple[float, int]:
    """Pull ``ref`` into the second engine after its images and build cache are gone: seconds, layers fetched."""
    bench.cleanup_engine26()
    fetched = set()

    def on_event(event: BuildEvent) -> None:
        if event.kind == "layer" and event.text.startswith(("Download complete", "Pull complete", "Downloading",
                                                                  "Extracting")):
            fetched.add(event.layer)

    started = time.monotonic()
    bench.engine26.pull(ref, on_event)
    seconds = time.monotonic() - started
    bench.made[bench.engine26_address].append(ref)
    return seconds, len(fetched)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="qlora@2026.11", help="STACK@RELEASE (default qlora@2026.11)")
    parser.add_argument("--profile", help="a profile file instead of a shipped stack (e.g. a test fixture)")
    parser.add_argument("--release", help="with --profile: the release (default: the profile's default)")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--pin", default=None, help="NAME=NEWVERSION to bump (default: peft=0.21.1; six=1.17.0 "
                                                    "for a --profile)")
    parser.add_argument("--registry", default="localhost:5000", help="a plain registry both engines push to")
    parser.add_argument("--engine26", default=ENGINE26, help=f"the second engine (default {ENGINE26})")
    parser.add_argument("--min-free-gb", type=float, default=20.0,
                        help="free disk on / each cold build needs before it starts (default 20)")
    parser.add_argument("--disk-floor-gb", type=float, default=4.0,
                        help="stop the run, cleaning up, when free disk on / falls below this (default 4)")
    parser.add_argument("--tiny", action="store_true",
                        help="try the bench's mechanics in minutes: a two-step Dockerfile installing only the "
                             "bumped package (figures meaningless)")
    parser.add_argument("--relock-upgrade", action="store_true",
                        help="lock the bumped copy afresh (`lock --upgrade`), not from the committed lock's versions: "
                             "what a bump cost before relocks preferred them")
    parser.add_argument("--skip", action="append", default=[], choices=["buildkit", "classic", "engine26", "disk"],
                        help="leave out a column (buildkit, classic: the default engine's; engine26) or the disk "
                             "figure; repeatable")
    args = parser.parse_args()
    # Ctrl-C, and a kill, end the run through its cleanup (a background shell starts it with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    if args.profile:
        profile, release = Path(args.profile).resolve(), args.release
        name = str(profile)
        pin = args.pin or "six=1.17.0"
    else:
        stack, _, release = args.spec.partition("@")
        profile, name, release = stack_path(stack), stack, release or None
        pin = args.pin or "peft=0.21.1"
    base = load_settings()
    context = prepare(name, release, args.target, ())
    spec = f"{context.plan.spec} ({args.target})" + (" --tiny" if args.tiny else "")
    if args.tiny:
        context = tiny(context, pin.split("=", 1)[0])
    print(f"benchmark: {spec}, bump {pin}")
    print(f"host at start: {host_load()}", flush=True)
    bench = Engines(args.engine26)
    bench.min_free = args.min_free_gb
    registry = Registry(args.registry)
    rows: dict[str, dict[str, Run]] = {}
    figures: list[str] = []
    watch = DiskWatch(args.disk_floor_gb)
    try:
        watch.__enter__()
        columns = [c for c in ("buildkit", "classic") if c not in args.skip]
        if columns:
            with tempfile.TemporaryDirectory(prefix="stackbuild-bench-") as folder:
                print(f"locking a copy of the profile with {pin}", flush=True)
                bumped_path, moved = bumped_profile(profile, pin, Path(folder), release, args.target, base,
                                                    args.relock_upgrade)
                print("\n".join(f"  {line}" for line in moved), flush=True)
                figures += moved
                bumped = prepare(str(bumped_path), release, args.target, ())
                if args.tiny:
                    bumped = tiny(bumped, pin.split("=", 1)[0])
                for column in columns:
                    default_column(bench, column, context, bumped, base, pin, rows)
                    bench.cleanup_default()  # its images and build cache are not needed any more: the disk back
        if "engine26" not in args.skip:
            engine26_column(bench, registry, context, base, args.registry, rows, figures)
            bench.cleanup_engine26()
        if "disk" not in args.skip:
            figures += disk_figures(bench)
    finally:
        watch.__exit__()
        print(f"\nhost at end: {host_load()}", flush=True)
        bench.cleanup_default()
        bench.cleanup_engine26()
        registry.cleanup()
        print_table(spec, pin, rows, figures)  # what was measured, on failure too


def default_column(bench: Engines, column: str, context: BuildContext, bumped: BuildContext, base: Settings,
                   pin: str, rows: dict[str, dict[str, Run]]) -> None:
    """Cold, no-change and bump builds on the default engine, through one builder."""
    engine = bench.buildkit if column == "buildkit" else bench.classic
    settings = replace(base, registry=f"stackbuild-bench/{column}")  # never the real stackbuild/* tags
    free_disk(bench.min_free, f"the {column} cold build")
    if column == "buildkit":
        said = bench.prune(bench.classic.address, "--filter", "type=exec.cachemount")
        print(f"[{column}] cache mounts pruned: {said}", flush=True)
        left = [r for r in bench.classic.client.df().get("BuildCache") or []
                if r.get("Type") == "exec.cachemount" and "/root/.cache/pip" in (r.get("Description") or "")]
        if left:
            print(f"  warning: {len(left)} pip cache mount(s) not pruned ({sum(bool(r.get('InUse')) for r in left)} "
                  "in use by another build): this cold build may find wheels there", flush=True)
    print(f"[{column}] cold build", flush=True)
    cold = rows.setdefault("cold", {})[column] = build(bench, engine, context, settings,
                                                       f"stackbuild-bench/{column}:cold", nocache=True)
    print(f"  {cold.seconds:.1f} s", flush=True)
    rows.setdefault("same", {})[column] = build(bench, engine, context, settings, f"stackbuild-bench/{column}:same")
    rows.setdefault("cached", {})[column] = cached_rebuild(bench, engine, context, settings, cold.result.image_id,
                                                           f"stackbuild-bench/{column}:cached")
    print(f"[{column}] rebuild after bumping {pin}", flush=True)
    bump = rows.setdefault("bump", {})[column] = build(bench, engine, bumped, settings,
                                                       f"stackbuild-bench/{column}:bump")
    print(f"  {bump.seconds:.1f} s ({bump.result.source})", flush=True)


def engine26_column(bench: Engines, registry: Registry, context: BuildContext, base: Settings, address: str,
                    rows: dict[str, dict[str, Run]], figures: list[str]) -> None:
    """The second engine: cold build, gzip push, registry cache, fresh engine, zstd push, pulls.

    The gzip push comes first, from the cold build: its blobs are new to the registry then. The
    registry cache exported after it holds the same gzip blobs (one BuildKit, one compression), so
    pushing the image after the cache would only find them there.
    """
    plan = context.plan
    repository = f"{address}/stackbuild-bench/{plan.stack.name}"
    cache = f"{repository}:cache-{plan.release.name}-{plan.target.name}"
    settings = replace(base, registry=f"{address}/stackbuild-bench")
    engine = bench.engine26
    bench.cleanup_engine26()  # a fresh engine: no build cache, no cache mounts
    free_disk(bench.min_free, "the second engine's cold build")
    print("[engine26] cold build", flush=True)
    cold = rows.setdefault("cold", {})["engine26"] = build(bench, engine, context, settings,
                                                           "stackbuild-bench/e26:cold", nocache=True)
    print(f"  {cold.seconds:.1f} s", flush=True)
    image = cold.result.ref.immutable

    print("[engine26] gzip push", flush=True)
    registry.pushed.append(image)
    layers: dict[str, str] = {}

    def on_layer(event: BuildEvent) -> None:
        if event.kind == "layer" and event.text.startswith(("Pushed", "Layer already exists", "Mounted from")):
            layers[event.layer] = event.text.split(" from ")[0]

    started = time.monotonic()
    engine.push(image, on_layer)
    gzip_seconds = time.monotonic() - started

    print("[engine26] registry cache export (steps cached here)", flush=True)
    registry.pushed.append(cache)
    bench.remove_images(bench.engine26_address)  # else the content tag is found and nothing is built
    export = build(bench, engine, context, settings, "stackbuild-bench/e26:export", cache_to=cache)
    inline = any("cache inline" in note for note in export.notes)
    manifest, _ = registry.manifest(cache)
    blobs = manifest.get("layers") or manifest.get("manifests") or []  # a cache index lists its blobs
    figures.append(f"registry cache {cache}: " + ("inline (the image pushed under the cache name)" if inline else
                   f"mode=max, {len(blobs)} blobs, {mb(sum(b.get('size', 0) for b in blobs))}") +
                   f"; exported in {export.seconds:.1f} s ({export.result.cached_steps}/{export.result.steps} "
                   "steps cached)")

    bench.cleanup_engine26()
    print("[engine26] fresh engine, --cache-from the registry only", flush=True)
    fresh = rows.setdefault("fresh", {})["engine26"] = build(bench, engine, context, settings,
                                                             "stackbuild-bench/e26:fresh", cache_from=cache)
    print(f"  {fresh.seconds:.1f} s", flush=True)

    print("[engine26] zstd: the image stored with zstd layers (a build, every step cached), then pushed", flush=True)
    zsettings = replace(settings, registry=f"{address}/stackbuild-bench/zstd", compression="zstd")
    zstd = build(bench, engine, context, zsettings, "stackbuild-bench/e26:zstd")
    zstd_ref = zstd.result.ref.immutable
    registry.pushed.append(zstd_ref)
    started = time.monotonic()
    engine.push(zstd_ref)
    zstd_seconds = time.monotonic() - started

    print("[engine26] zstd registry cache export (steps cached here), then a fresh engine from it", flush=True)
    zcache = f"{repository}:cache-zstd-{plan.release.name}-{plan.target.name}"
    registry.pushed.append(zcache)
    bench.remove_images(bench.engine26_address)  # the zstd image is in the registry for the pull below
    zexport = build(bench, engine, context, zsettings, "stackbuild-bench/e26:zexport", cache_to=zcache)
    zmanifest, _ = registry.manifest(zcache)
    zblobs = zmanifest.get("layers") or zmanifest.get("manifests") or []
    figures.append(f"registry cache {zcache}: mode=max, zstd, {len(zblobs)} blobs, "
                   f"{mb(sum(b.get('size', 0) for b in zblobs))}; exported in {zexport.seconds:.1f} s "
                   f"({zexport.result.cached_steps}/{zexport.result.steps} steps cached)")
    bench.cleanup_engine26()
    zfresh = rows.setdefault("fresh-zstd", {})["engine26"] = build(bench, engine, context, zsettings,
                                                                   "stackbuild-bench/e26:zfresh", cache_from=zcache)
    print(f"  {zfresh.seconds:.1f} s", flush=True)

    sizes = {}
    pushed_layers = {layer["digest"].split(":", 1)[1][:12] for layer in registry.image_layers(image)}
    how = [state for short, state in layers.items() if short in pushed_layers]
    gzip_how = ", ".join(f"{how.count(k)} {k.lower()}" for k in sorted(set(how)))
    for kind, ref in (("gzip", image), ("zstd", zstd_ref)):
        found = registry.image_layers(ref)
        media = sorted({layer.get("mediaType", "?").rsplit(".", 1)[-1] for layer in found})
        sizes[kind] = (sum(layer.get("size", 0) for layer in found), len(found), "/".join(media))
    print("[engine26] pulls", flush=True)
    gzip_pull, gzip_layers = timed_pull(bench, image)
    zstd_pull, zstd_layers = timed_pull(bench, zstd_ref)
    def row(label: str, gzip: str, zstd: str, ratio: float, note: str = "") -> str:
        return f"{label:<44}{gzip:>16}{zstd:>16}{ratio:>13.2f}x{note}"

    figures.append("")
    figures.append(f"{'5 push / pull (second engine)':<44}{'gzip':>16}{'zstd':>16}     zstd/gzip")
    figures.append(f"{'  store as zstd (a build, steps cached)':<44}{'-':>16}{zstd.seconds:>14.1f} s"
                   f"   ({zstd.result.cached_steps}/{zstd.result.steps} steps cached; recompressing every layer)")
    figures.append(row("  push", f"{gzip_seconds:.1f} s", f"{zstd_seconds:.1f} s", zstd_seconds / gzip_seconds))
    figures.append(row("  pull (the engine emptied first)", f"{gzip_pull:.1f} s", f"{zstd_pull:.1f} s",
                       zstd_pull / gzip_pull))
    figures.append(row("  bytes pushed (the manifest's layers)", mb(sizes["gzip"][0]), mb(sizes["zstd"][0]),
                       sizes["zstd"][0] / sizes["gzip"][0]))
    for kind, pulled in (("gzip", gzip_layers), ("zstd", zstd_layers)):
        figures.append(f"  {kind}: {sizes[kind][1]} layers ({sizes[kind][2]}), {pulled} fetched by the pull"
                       + (f"; the push's layers: {gzip_how}" if kind == "gzip" else ""))


def disk_figures(bench: Engines) -> list[str]:
    present, missing, problem = cpu_images_disk(bench.classic)
    lines = ["", "6 disk: the stackbuild/<stack>:<release>-cpu images on the default engine (overlay2 layer store)"]
    if problem:
        return lines + [f"  not measured: {problem}"]
    for image in sorted(present, key=lambda image: -image.size):
        lines.append(f"  {image.name:<50}{mb(image.size):>14}   on {image.base}")
    for name in missing:
        lines.append(f"  {name:<50}{'missing':>14}")
    if present:
        largest = max(image.size for image in present)
        lines.append(f"  {len(present)} images: layers' union {mb(union(present))}, largest image {mb(largest)}: "
                     f"{union(present) / largest:.2f}x  (goal <= 1.6x); their sizes added up: "
                     f"{mb(sum(image.size for image in present))}")
        for base in sorted({image.base for image in present}):
            group = [image for image in present if image.base == base]
            top = max(image.size for image in group)
            lines.append(f"    on {base}: {len(group)} images, union {mb(union(group))}, largest {mb(top)}: "
                         f"{union(group) / top:.2f}x")
    return lines


def print_table(spec: str, pin: str, rows: dict[str, dict[str, Run]], figures: list[str]) -> None:
    columns = ("classic", "buildkit", "engine26")
    print(f"\n{spec}")
    print(f"{'':<44}{'classic':>16}{'buildkit':>16}{'buildkit':>16}")
    print(f"{'':<44}{'dockerd 20.10':>16}{'dockerd 20.10':>16}{'dockerd 26.1':>16}")

    def line(label: str, cell) -> None:
        print(f"{label:<44}" + "".join(f"{cell(column):>16}" for column in columns))

    def seconds(key: str):
        return lambda c: f"{rows[key][c].seconds:.1f} s" if c in rows.get(key, {}) else "-"

    def ratio(key: str, goal: str):
        def cell(c):
            if c not in rows.get(key, {}) or c not in rows.get("cold", {}):
                return "-"
            return f"{rows[key][c].seconds / rows['cold'][c].seconds:.2%}"
        return cell

    def steps(key: str):
        return lambda c: (f"{rows[key][c].result.cached_steps}/{rows[key][c].result.steps}"
                          if c in rows.get(key, {}) else "-")

    def tally(key: str, kind: str):  # pip's and uv's logged files: "downloaded" or "cached"
        return lambda c: (f"{len(getattr(rows[key][c].pip, kind))}, {mb(sum(getattr(rows[key][c].pip, kind).values()))}"
                          if c in rows.get(key, {}) else "-")

    def received(key: str):
        return lambda c: (mb(rows[key][c].received)
                          if c in rows.get(key, {}) and rows[key][c].received is not None else "-")

    line("1 cold build (--no-cache)", seconds("cold"))
    line("2 no-change rebuild: content tag found", seconds("same"))
    line("  the engine's build, every step cached", seconds("cached"))
    line("    steps cached", lambda c: rows["cached"][c].notes[0].split(" steps")[0] if c in rows.get("cached", {})
         else "-")
    line(f"3 rebuild after bumping {pin}", seconds("bump"))
    line("    / cold (goal <= 5 %)", ratio("bump", "5 %"))
    line("    steps cached / steps", steps("bump"))
    line("    pip/uv downloads logged (files, MB)", tally("bump", "downloaded"))
    line("    pip cache hits logged (files, MB)", tally("bump", "cached"))

    def again(c):
        if c not in rows.get("bump", {}):
            return "-"
        twice = set(rows["bump"][c].pip.downloaded) & set(rows["cold"][c].pip.downloaded)
        return f"{len(twice)}, {mb(sum(rows['bump'][c].pip.downloaded[n] for n in twice))}"
    line("    downloaded again (cold had them)", again)
    line("    bytes the host received (all downloads)", received("bump"))
    line("  cold build: bytes the host received", received("cold"))
    line("  cold build's pip downloads (files, MB)", tally("cold", "downloaded"))
    line("4 fresh engine, registry cache only", seconds("fresh"))
    line("    / its cold build (goal <= 10 %)", ratio("fresh", "10 %"))
    line("    steps cached / steps", steps("fresh"))
    line("  the same, cache and image as zstd", seconds("fresh-zstd"))
    line("    / its cold build (goal <= 10 %)", ratio("fresh-zstd", "10 %"))
    line("    steps cached / steps", steps("fresh-zstd"))
    for c in columns:
        if c in rows.get("bump", {}):
            new = sorted(PipTally.package(n) for n in rows["bump"][c].pip.downloaded)
            print(f"  {c}: bump downloaded {', '.join(new) if new else 'nothing'}")
    for line_ in figures:
        print(line_)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C, a kill, or the disk floor: cleaned up and printed already
        sys.exit(130)
