"""`stackbuild build` as a library call: render, name, then reuse, pull or build; tag, label.

profile -> plan -> render -> identity; then the first of: the image of that content tag is here
already; a registry has it (pull-or-build, its labels checked against the plan); a build
(``build_context``: the Dockerfile rendered in the engine's dialect, one BuildRequest; the engine
decides how site settings arrive and refuses what it cannot do before anything runs). A registry
that cannot be reached or denies access is a warning, never a failed build. A failed build writes
its whole log to a file and raises BuildError naming the step.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from ..engine import connect as engines
from ..plan import labels as schema
from ..config import Settings
from ..doctor.diagnose import diagnose, diagnosis_lines
from ..engine.api import BuildEvent, BuildLog, BuildOptions, BuildRequest, Engine, OnEvent
from ..errors import BuildError, ConfigError, RegistryError
from ..render.identity import ImageRef
from ..engine.references import image_ref_problem
from ..profile.names import parse_assignments
from ..safety.printable import printable
from .registry import locate, pull_verified
from ..render.dockerfile import BuildContext, dockerfile_for
from .signing import trusted_keys

# SIMD features that decide whether code compiled with -march=native runs on another CPU.
CPU_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "amx_tile", "asimd", "sve")


@dataclass(frozen=True)
class BuildResult:
    ref: ImageRef
    image_id: str
    steps: int
    cached_steps: int
    seconds: float
    source: str = "built"  # built | pulled (from the registry) | local (this content tag was here already)

    def as_dict(self) -> dict:
        return {"image": self.ref.moving, "content_tag": self.ref.immutable, "id": self.image_id,
                "content_hash": self.ref.content_hash, "source": self.source, "steps": self.steps,
                "cached_steps": self.cached_steps, "seconds": round(self.seconds, 1)}

    @property
    def fully_cached(self) -> bool:
        return self.steps > 0 and self.cached_steps >= self.steps - 1  # FROM is never "cached"


def log_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stackbuild" / "logs"


def host_cpu_summary(engine_address: str) -> str:
    """The SIMD features of the build host, when the engine runs on this machine."""
    if not engine_address.startswith("unix://"):
        return "unknown (remote engine; see /opt/stackbuild/build-host-cpu.txt in the image)"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    return " ".join([platform.machine(), *(f for f in CPU_FEATURES if f in flags)])


def parse_build_args(pairs: list[str]) -> dict[str, str]:
    return parse_assignments(pairs, ConfigError, "--build-arg '{}' is not NAME=VALUE")


def build_image(
    context: BuildContext,
    settings: Settings,
    *,
    engine: Engine | None = None,
    extra_tags: tuple[str, ...] = (),
    extra_labels: dict[str, str] | None = None,
    nocache: bool = False,
    pull: bool = False,
    use_registry: bool = True,
    buildargs: dict[str, str] | None = None,
    cache_from: str | None = None,
    cache_to: str | None = None,
    on_event: OnEvent = lambda event: None,
) -> BuildResult:
    """Reuse, pull or build one image; tags it with its moving and content tags (and any extra tags).

    ``pull`` pulls the base image even if present; ``use_registry=False`` never asks the registry
    for a prebuilt image; ``nocache`` always builds, every step afresh. ``cache_from``/``cache_to``
    name a registry cache (BuildKit): an image reference, or ``registry`` for
    ``<registry>/<stack>:cache-<release>-<target>``.
    """
    for tag in extra_tags:
        problem = image_ref_problem(tag, digest=False)
        if problem:
            raise ConfigError(f"--tag '{printable(tag)}' {problem}")
    cache_from, cache_to = (cache_ref(context, settings.registry, flag, value)
                            for flag, value in (("--cache-from", cache_from), ("--cache-to", cache_to)))
    options = build_options(settings, nocache=nocache, buildargs=buildargs, cache_from=cache_from, cache_to=cache_to)
    engine = engine or engines.connect(kind=settings.engine, builder=settings.builder)
    engine.check_options(options)
    plan = context.plan
    started = time.monotonic()
    located = locate(engine, context, settings.registry, "fresh" if pull else "fetch", on_event)
    ref = located.ref
    if not nocache:
        if located.local is not None:
            on_event(BuildEvent("note", f"{located.local[0]} is here already: nothing to build"))
            return _finish(engine, located.local[1], ref, extra_tags, 0, 0, started, "local")
        if use_registry and settings.registry:
            pulled = _try_pull(engine, plan, ref, on_event, trusted_keys(settings.verify_keys))
            if pulled is not None:
                return _finish(engine, pulled, ref, extra_tags, 0, 0, started, "pulled")
    if plan.lock is None:
        on_event(BuildEvent("warning", f"{plan.spec} ({plan.target.name}) has no lock: pip resolves its transitive "
                                       "dependencies during the build, so two builds may differ (`stackbuild lock "
                                       f"{plan.spec} --target {plan.target.name}` makes one)"))
    if not located.base_here:
        located = locate(engine, context, settings.registry, "present", on_event)
        if located.ref != ref:
            on_event(BuildEvent("warning", f"{plan.target.base.ref} changed in its registry while stackbuild looked "
                                           f"for a prebuilt image; building {located.ref.immutable}"))
            ref = located.ref
    labels = {
        schema.CONTENT_HASH: ref.content_hash,
        schema.BASE: located.base,
        schema.BUILD_HOST_CPU: host_cpu_summary(engine.address),
        schema.BUILD_ENGINE: f"{engine.kind} (Docker {engine.version()})",
        **(extra_labels or {}),
    }
    log = BuildLog()
    cached = 0

    def count(event: BuildEvent) -> None:
        nonlocal cached
        if event.kind == "cached":
            cached += 1
        on_event(event)

    on_event(BuildEvent("note", f"building with the {engine.kind} engine"))
    try:
        image_id = build_context(engine, context, ref.immutable, labels, options, log, count)
    except BuildError as exc:
        found = diagnose("\n".join(log.lines), plan.stack.name, plan.release.name)
        raise exc.with_log(tuple(log.tail()), _write_log(plan.spec, plan.target.name, log),
                           diagnosis_lines(found)) from None
    except KeyboardInterrupt:
        _write_log(plan.spec, plan.target.name, log)
        raise
    return _finish(engine, image_id, ref, extra_tags, log.total, cached, started, "built")


def build_options(settings: Settings, *, nocache: bool = False, buildargs: dict[str, str] | None = None,
                  cache_from: str | None = None, cache_to: str | None = None) -> BuildOptions:
    """How builds go with these settings: network, site settings, compression, and the build's own flags."""
    return BuildOptions(network=None if settings.build_network == "default" else settings.build_network,
                        nocache=nocache, buildargs=dict(buildargs or {}), site=dict(settings.site),
                        cache_from=cache_from, cache_to=cache_to, compression=settings.compression)


def build_context(engine: Engine, context: BuildContext, tag: str, labels: dict[str, str], options: BuildOptions,
                  log: BuildLog, on_event: OnEvent) -> str:
    """Build one rendered context on one engine, in the engine's dialect; the image id.

    The one way a context is built: ``build_image`` after its reuse-or-pull, the benches and the
    integration tests all come here, so each engine's dialect is applied in one place.
    """
    dialect = engine.dialect
    dockerfile = dockerfile_for(context, dialect.site_secret, dialect.cache_mounts)
    return engine.build(BuildRequest(dockerfile, context.files, tag, labels, options), log, on_event)


def cache_ref(context: BuildContext, registry: str | None, flag: str, value: str | None) -> str | None:
    """A registry cache's reference: as given, or ``registry`` for the stack's own cache tag there."""
    if value is None:
        return None
    if value == "registry":
        if not registry:
            raise ConfigError(f"{flag} registry needs a registry (--registry, STACKBUILD_REGISTRY or the config "
                              "file's registry)")
        plan = context.plan
        tag = f"cache-{plan.release.name}-{plan.target.name}" + "".join(f"-{o}" for o in plan.options)
        return f"{registry}/{plan.stack.name}:{tag}"
    problem = image_ref_problem(value, tag=True, digest=False)
    if problem:
        raise ConfigError(f"{flag} '{printable(value)}' {problem}, or the word registry")
    return value


def _finish(engine: Engine, image_id: str, ref: ImageRef, extra_tags: tuple[str, ...], steps: int, cached: int,
            started: float, source: str) -> BuildResult:
    for name in (ref.immutable, ref.moving, *extra_tags):
        engine.tag(image_id, name)
    return BuildResult(ref, image_id, steps, cached, time.monotonic() - started, source)


def _try_pull(engine: Engine, plan, ref: ImageRef, on_event: OnEvent, keys=()) -> str | None:
    """The image id of the verified prebuilt image, or None (with a note or a warning) to build it here.

    An image whose signature does not verify (verify_keys) is refused (RegistryError, exit 12), never
    replaced by a local build in silence: someone pushed what the key holders did not sign.
    """
    on_event(BuildEvent("note", f"looking for {ref.immutable} in the registry"))
    try:
        return pull_verified(engine, plan, ref, on_event, keys).image_id
    except RegistryError as exc:
        if exc.reason == "signature":
            raise RegistryError(f"{exc}. Build it here without the registry with --no-pull", "signature") from None
        if exc.reason == "not-found":
            on_event(BuildEvent("note", f"{ref.immutable} is not in the registry: building it here"))
        else:
            on_event(BuildEvent("warning", f"{exc}; building it here instead"))
        return None


def _write_log(spec: str, target: str, log: BuildLog) -> str | None:
    directory = log_dir()
    path = directory / f"{spec.replace('@', '_')}-{target}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(log.lines) + "\n", encoding="utf-8")
    except OSError:
        return None
    return str(path)
