"""`stackbuild build` as a library call: render, name, build, tag, label.

profile -> plan -> render -> identity -> engine.build, with the site server up for the build's
duration. A failed build writes its whole log to a file and raises BuildError naming the step.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .doctor import diagnose, diagnosis_lines
from .engine import BuildEvent, BuildLog, Engine
from .errors import BuildError, ConfigError
from .identity import ImageRef, image_ref
from .plan import plan_build
from .profile import load_stack
from .render import BuildContext, render_context
from .site import SiteServer

# SIMD features that decide whether code compiled with -march=native runs on another CPU.
CPU_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "amx_tile", "asimd", "sve")
BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class BuildResult:
    ref: ImageRef
    image_id: str
    steps: int
    cached_steps: int
    seconds: float

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
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not BUILD_ARG.match(name):
            raise ConfigError(f"--build-arg '{pair}' is not NAME=VALUE")
        out[name] = value
    return out


def prepare(spec: str, release: str | None, target: str | None, options: list[str] | tuple[str, ...]) -> BuildContext:
    """Load, plan and render one stack (by name or profile path) into its build context."""
    return render_context(plan_build(load_stack(spec), release, target, options))


def build_image(
    context: BuildContext,
    settings: Settings,
    *,
    engine: Engine | None = None,
    extra_tags: tuple[str, ...] = (),
    extra_labels: dict[str, str] | None = None,
    nocache: bool = False,
    pull: bool = False,
    buildargs: dict[str, str] | None = None,
    on_event: Callable[[BuildEvent], None] = lambda event: None,
) -> BuildResult:
    """Build one image; tags it with its moving and content tags (and any extra tags)."""
    network = None if settings.build_network == "default" else settings.build_network
    site = settings.site
    if site and network != "host":
        raise ConfigError(
            f"site settings ({', '.join(sorted(site))}) reach the build from a loopback server, which needs "
            f"host networking, but build_network is '{settings.build_network}': "
            "set STACKBUILD_BUILD_NETWORK=host or pass --network host")
    for tag in extra_tags:
        if not re.match(r"^[a-z0-9./_:-]+$", tag) or tag.endswith(":"):
            raise ConfigError(f"--tag '{tag}' is not an image name")
    engine = engine or Engine.connect()
    plan = context.plan
    started = time.monotonic()
    base = engine.base_identity(plan.target.base.ref, pull, on_event)
    ref = image_ref(context, base, settings.registry)
    labels = {
        "io.stackbuild.content-hash": ref.content_hash,
        "io.stackbuild.base": base,
        "io.stackbuild.build-host-cpu": host_cpu_summary(engine.address),
        **(extra_labels or {}),
    }
    log = BuildLog()
    cached = 0

    def count(event: BuildEvent) -> None:
        nonlocal cached
        if event.kind == "cached":
            cached += 1
        on_event(event)

    try:
        with SiteServer(site):
            image_id = engine.build(context.dockerfile, context.files, ref.immutable, labels, network, nocache,
                                    buildargs or {}, log, count)
    except BuildError as exc:
        found = diagnose("\n".join(log.lines), plan.stack.name, plan.release.name)
        raise exc.with_log(tuple(log.tail()), _write_log(plan.spec, plan.target.name, log),
                           diagnosis_lines(found)) from None
    except KeyboardInterrupt:
        _write_log(plan.spec, plan.target.name, log)
        raise
    for name in (ref.moving, *extra_tags):
        engine.tag(image_id, name)
    return BuildResult(ref, image_id, log.total, cached, time.monotonic() - started)


def _write_log(spec: str, target: str, log: BuildLog) -> str | None:
    directory = log_dir()
    path = directory / f"{spec.replace('@', '_')}-{target}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(log.lines) + "\n", encoding="utf-8")
    except OSError:
        return None
    return str(path)
