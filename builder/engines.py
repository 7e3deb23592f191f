"""Where commands get their engine: the one place that picks and connects it."""

from __future__ import annotations

from .engine_api import Engine


def connect(timeout: int = 600) -> Engine:
    """The engine commands use: Docker at DOCKER_HOST or the default socket (EngineUnavailable if none)."""
    from .engine import DockerEngine  # imported on use: only commands that need an engine load docker

    return DockerEngine.connect(timeout)
