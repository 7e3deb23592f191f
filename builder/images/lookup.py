"""What a user names, found as an image or a package set: the image of a stack (by its content tag)
or as given, whether an image still matches its profile, and the packages of a lock, a release or
an image. Used by test, run, inspect and diff."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..plan import labels as schema
from ..engine.api import ImageEngine
from ..errors import LockError, SelectionError, StackbuildError
from ..lock.format import read_lock
from ..plan.build_plan import plan_for
from .registry import locate
from ..render.dockerfile import BuildContext, prepare
from ..profile.load import load_stack
from ..profile.names import KEBAB, RELEASE
from ..profile.resolved import Release
from ..profile.spec import is_lock_file, looks_like_image, split_spec
from ..safety.printable import printable

# An image from a registry is untrusted input: its labels are data, matched against these rules
# before they select anything (a stack label of '/etc/shadow' or '../x' names no shipped stack).
_LABEL_RULES = {schema.STACK: KEBAB, schema.RELEASE: RELEASE, schema.TARGET: KEBAB}


def image_of(engine: ImageEngine, what: str, target: str | None, options: list[str], registry: str | None) -> str:
    """An image reference as given (it must be here), or the content-tagged image of a stack's plan
    (never downloading anything: the image must have been built or pulled)."""
    if looks_like_image(what):
        if engine.image(what) is None:
            raise SelectionError(f"image {what} is not on this engine (pull or build it first)")
        return what
    name, release = split_spec(what)
    return built_image(engine, prepare(name, release, target, options), registry, what)


def built_image(engine: ImageEngine, context: BuildContext, registry: str | None, what: str) -> str:
    """The local name of the image of this plan, by its content tag (never downloading anything);
    SelectionError naming the build to run when it is not here. ``what`` is the stack as the user named it."""
    located = locate(engine, context, registry, "known")
    if located.local is None:
        raise SelectionError(f"{located.ref.immutable} is not here: run `stackbuild build {what} --target "
                             f"{context.plan.target.name}` first (a changed profile or template means a new content "
                             "tag)")
    return located.local[0]


def release_of(engine: ImageEngine, what: str, target: str | None, options: list[str],
               registry: str | None) -> tuple[str, Release, str]:
    """(image, release, target) of what a user names: a stack's content-tagged image with its
    plan's release and target, or an image as given with the shipped release and target its labels
    name (names only, never paths)."""
    image = image_of(engine, what, target, options, registry)
    if not looks_like_image(what):
        name, release = split_spec(what)
        plan = prepare(name, release, target, options).plan
        return image, plan.release, plan.target.name
    labels = engine.labels(image)
    stack, release = stack_of(labels, image)
    found = label_identity(labels).get(schema.TARGET)
    if stack is None or release is None or found is None:
        raise SelectionError(f"image {printable(image)} has no stackbuild stack, release and target labels: name the "
                             "stack instead (STACK[@RELEASE] with --target)")
    try:
        return image, load_stack(stack).release(release), found
    except StackbuildError as exc:
        raise SelectionError(f"image {printable(image)}: its labels name {stack}@{release}, which the shipped "
                             f"profiles do not have ({exc})") from None


def matches_profile(engine: ImageEngine, profile: str | None, info: dict, registry: str | None) -> bool | None:
    """Whether an image's content hash (``info`` from describe_image) is the one the local profile would
    build now; None when the local profiles have no such stack, release or target. ``profile`` is
    what the user named; None for the shipped stack the image's labels name (a name, never a path)."""
    if profile is None:
        labels = {schema.STACK: info["stack"], schema.RELEASE: info["release"], schema.TARGET: info["target"]}
        if len(label_identity(labels)) < len(schema.IDENTITY):
            return None
        profile = info["stack"]
    try:
        context = prepare(split_spec(profile)[0], info["release"], info["target"], info["options"])
    except StackbuildError:
        return None
    return locate(engine, context, registry).ref.content_hash == info["content_hash"]


def packages_of(what: str, target: str | None, engine: Callable[[], ImageEngine]) -> dict[str, str]:
    """name -> version of a lock file, a stack release's lock, or an image's lock label (``engine`` is
    called only for an image)."""
    if is_lock_file(what):
        if not Path(what).is_file():
            raise SelectionError(f"lock file not found: {what}")
        return read_lock(Path(what)).versions()
    if looks_like_image(what):
        labels = engine().labels(what)
        if schema.LOCK not in labels:
            raise SelectionError(f"image {what} carries no {schema.LOCK} label (built without a lock, or not "
                                 "by stackbuild): compare its release instead")
        return json.loads(labels[schema.LOCK])
    name, release = split_spec(what)
    plan = plan_for(name, release, target)
    if plan.lock is None:
        raise LockError(f"{plan.spec} ({plan.target.name}) has no lock: run `stackbuild lock {plan.spec} --target "
                        f"{plan.target.name}` first")
    return plan.lock.versions()


def label_identity(labels: dict[str, str]) -> dict[str, str]:
    """The stack, release and target labels an image carries (those it has that look like names)."""
    return {key: value for key, value in schema.identity_of(labels).items()
            if isinstance(value, str) and _LABEL_RULES[key].match(value)}


def stack_of(labels: dict[str, str], image: str) -> tuple[str | None, str | None]:
    """(stack, release) an image's labels name, as shipped stacks' names: None where a label is
    missing; SelectionError where one is not a name (it is never read as a path)."""
    for key in (schema.STACK, schema.RELEASE):
        value = labels.get(key)
        if value is not None and not (isinstance(value, str) and _LABEL_RULES[key].match(value)):
            raise SelectionError(f"image {printable(image)}: its {key} label '{printable(str(value)[:100])}' is not "
                                 "a stack or release name (labels select a shipped profile by name, never a file): "
                                 "give --stack instead")
    return labels.get(schema.STACK), labels.get(schema.RELEASE)
