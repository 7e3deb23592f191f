"""Where commands get their engine: the one place that picks, names and connects it.

Two engines build: ``classic`` (the Docker SDK's classic builder) and ``buildkit`` (BuildKit through
the `docker buildx` plugin; the SDK for everything else). ``auto`` (the default of the ``engine``
setting) is buildkit where `docker buildx` answers, else classic. Commands that only run, inspect,
pull or push get the SDK engine either way. Adding an engine: its module, and its name here.
"""

from __future__ import annotations

import re

from .api import Engine
from ..errors import ConfigError
from ..safety.printable import printable

ENGINE_KINDS = ("auto", "buildkit", "classic")
# A buildx builder's name (`docker buildx ls`).
BUILDX_BUILDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
BUILDER_RULE = "letters, digits, '.', '_' and '-'; `docker buildx ls` lists them"


def resolve(kind: str = "auto", builder: str | None = None) -> str:
    """buildkit or classic: what ``kind`` means on this machine (auto asks `docker buildx version`)."""
    from .buildkit import buildx_version

    if kind not in ENGINE_KINDS:
        raise ConfigError(f"engine '{printable(kind)}' is not one of {', '.join(ENGINE_KINDS)}")
    if kind == "classic" and builder:
        raise ConfigError(f"--builder {builder} names a buildx builder, which the classic engine does not use: "
                          "drop --engine classic (or the builder)")
    if kind == "auto":
        return "buildkit" if builder or buildx_version() is not None else "classic"
    return kind


def describe(kind: str = "auto", builder: str | None = None) -> str:
    """For `config show`: the engine builds go through, and why."""
    from .buildkit import buildx_version

    chosen = resolve(kind, builder)
    if chosen == "classic":
        why = "docker buildx does not answer" if kind == "auto" else "asked for"
        return f"classic (the Docker SDK's classic builder; {why})"
    version = buildx_version() or "docker buildx does not answer"
    return f"buildkit ({version}{', builder ' + builder if builder else ''})"


def connect(timeout: int = 600, kind: str = "classic", builder: str | None = None) -> Engine:
    """The engine commands use: Docker at DOCKER_HOST or the default socket (EngineUnavailable if none).

    ``kind`` picks how builds go (auto, buildkit, classic); ``builder`` is a buildx builder's name.
    """
    from .classic import DockerEngine  # imported on use: only commands that need an engine load docker

    if resolve(kind, builder) == "buildkit":
        from .buildkit import BuildxEngine

        return BuildxEngine.connect(timeout, builder)
    return DockerEngine.connect(timeout)


def host_info(timeout: int = 15) -> dict:
    """version, address, runtimes and root_dir of the engine at DOCKER_HOST (EngineUnavailable if none)."""
    engine = connect(timeout=timeout)
    try:
        return engine.host_info()
    finally:
        engine.close()
