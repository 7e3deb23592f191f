"""The image label schema: every ``io.stackbuild.*`` key, in one place.

Labels are how an image describes itself without being pulled or run: what it was planned from
(stack, release, target, options, pins, fixes, lock), what it hashes to, and what it was built
on. Everything that writes or reads a label names it from here.
"""

from __future__ import annotations

PREFIX = "io.stackbuild."

# Known at render time (BuildPlan.labels)
STACK = PREFIX + "stack"
RELEASE = PREFIX + "release"
TARGET = PREFIX + "target"
OPTIONS = PREFIX + "options"
PINS = PREFIX + "pins"
FIXES = PREFIX + "fixes"
LOCK = PREFIX + "lock"
# Added when building
CONTENT_HASH = PREFIX + "content-hash"
BASE = PREFIX + "base"
BUILD_HOST_CPU = PREFIX + "build-host-cpu"
BUILD_ENGINE = PREFIX + "build-engine"  # the builder (classic or buildkit) and the engine version that built it
BUILT = (CONTENT_HASH, BASE, BUILD_HOST_CPU, BUILD_ENGINE)  # what a build adds to the plan's own labels
# On containers stackbuild starts
CONTAINER = PREFIX + "container"
SMOKE = PREFIX + "smoke"
# OCI annotations
OCI_TITLE = "org.opencontainers.image.title"
OCI_DESCRIPTION = "org.opencontainers.image.description"
OCI_VERSION = "org.opencontainers.image.version"
OCI_BASE_NAME = "org.opencontainers.image.base.name"

IDENTITY = (STACK, RELEASE, TARGET)  # what names an image's stack x release x target


def identity_of(labels: dict[str, str]) -> dict[str, str]:
    """The stack, release and target labels an image carries (those it has)."""
    return {key: labels[key] for key in IDENTITY if key in labels}


def split_list(value: str | None) -> list[str]:
    """A comma-joined label (options, fixes) as a list."""
    return [item for item in (value or "").split(",") if item]
