"""Prebuilt images: find one here, pull one of exactly this content, push one, read its labels.

An image's content tag (identity.py) names exactly what it is, so an image found under it, here
or in a registry, can stand in for a build. A pulled image is still checked: its labels must say
the same stack, release, target, options, pins, fixes and content hash as the local plan, or it
is removed again and not used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..plan import labels as schema
from ..engine.api import BuildEvent, ImageEngine, OnEvent
from ..errors import ConfigError, RegistryError, SelectionError
from ..render.identity import ImageRef, image_ref
from ..plan.build_plan import BuildPlan
from ..render.dockerfile import BuildContext
from .signing import verify_image

LOCAL_REPOSITORY = "stackbuild"  # where images built without a registry setting are named


def local_names(ref: ImageRef, stack: str) -> list[str]:
    """The names an image of this content may have here: under the registry, or built without one."""
    names = [ref.immutable]
    unregistered = f"{LOCAL_REPOSITORY}/{stack}:{ref.content_tag}"
    if unregistered not in names:
        names.append(unregistered)
    return names


def find_local(engine: ImageEngine, ref: ImageRef, stack: str) -> tuple[str, str] | None:
    """(name, image id) of a local image with this content tag, under either name, or None."""
    for name in local_names(ref, stack):
        info = engine.image(name)
        if info is not None:
            return name, info["Id"]
    return None


def expected_labels(plan: BuildPlan, ref: ImageRef) -> dict[str, str]:
    return {**plan.labels(), schema.CONTENT_HASH: ref.content_hash}


def label_mismatches(labels: dict[str, str], plan: BuildPlan, ref: ImageRef) -> list[str]:
    """What an image's labels say differently from the plan, one line per label."""
    out = []
    for name, want in expected_labels(plan, ref).items():
        have = labels.get(name)
        if have != want:
            shown = "missing" if have is None else f"'{_short(have)}'"
            out.append(f"{name} is {shown}, the local profile says '{_short(want)}'")
    return out


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def known_base(engine: ImageEngine, base_ref: str) -> tuple[str | None, bool]:
    """(the base's identity, whether it is here), without pulling: the local image's digest, else the
    digest its registry gives the tag now; (None, False) when neither can be had."""
    identity = engine.local_identity(base_ref)
    if identity is not None:
        return identity, True
    digest = engine.remote_digest(base_ref)
    return (f"{base_ref}@{digest}" if digest else None), False


BaseMode = Literal["known", "fetch", "fresh", "present"]


@dataclass(frozen=True)
class Located:
    """The image of a plan: its names, the base identity they hash, and whether it (and its base) is here."""

    ref: ImageRef
    base: str
    base_here: bool
    local: tuple[str, str] | None  # (name, image id) of this content tag here, under either name


def locate(engine: ImageEngine, context: BuildContext, registry: str | None, base: BaseMode = "fetch",
           on_event: OnEvent = lambda event: None) -> Located:
    """The image of this plan: here (``local``), or the names a registry has it under and a build makes.

    The content tag hashes the base's digest, so the base must be known. ``base`` says how far to go
    for it: ``known`` never downloads (SelectionError when neither the engine nor its registry knows
    it);
    ``fetch`` pulls it only when its digest cannot be had otherwise, so finding a prebuilt image costs
    no base download; ``fresh`` pulls it anew (build --pull); ``present`` makes sure it is here, as a
    build needs.
    """
    plan = context.plan
    base_ref = plan.target.base.ref
    identity, here = (None, False) if base == "fresh" else known_base(engine, base_ref)
    if base == "known" and identity is None:
        raise SelectionError(f"{plan.label} is not built here (no {base_ref}, and its registry cannot be asked): "
                             f"run `stackbuild build {plan.spec} --target {plan.target.name}` first")
    if identity is None or (base == "present" and not here):
        identity, here = engine.base_identity(base_ref, True, on_event), True
    ref = image_ref(context, identity, registry)
    return Located(ref, identity, here, find_local(engine, ref, plan.stack.name))


@dataclass(frozen=True)
class Pulled:
    name: str
    image_id: str


def pull_verified(engine: ImageEngine, plan: BuildPlan, ref: ImageRef, on_event: OnEvent = lambda event: None,
                  keys: Sequence[tuple[str, object]] = ()) -> Pulled:
    """Pull the content tag and check its labels against the plan; RegistryError when either fails.

    With ``keys`` (verify_keys), the manifest digest the tag points at must carry a signature by one of
    them (builder/images/signing.py) before anything is pulled, and exactly that digest is pulled.
    """
    source = ref.immutable
    if keys:
        verified = verify_image(ref.immutable, ref.content_tag, keys)
        on_event(BuildEvent("note", f"{ref.immutable} is {verified.digest}, signed (verified with {verified.key})"))
        source = f"{ref.repository}@{verified.digest}"
    engine.pull(source, on_event)
    info = engine.image(source)
    if info is None:
        raise RegistryError(f"pulled {source} but the engine does not have it")
    if source != ref.immutable:
        engine.tag(info["Id"], ref.immutable)
    labels = dict((info.get("Config") or {}).get("Labels") or {})
    wrong = label_mismatches(labels, plan, ref)
    if wrong:
        engine.untag(ref.immutable)
        if source != ref.immutable:
            engine.untag(source)
        raise RegistryError(f"{ref.immutable} from the registry is not what the local profile describes, so it was "
                            "removed again: " + "; ".join(wrong), "mismatch")
    engine.tag(info["Id"], ref.moving)
    return Pulled(ref.immutable, info["Id"])


def require_registry(registry: str | None, command: str) -> str:
    if not registry:
        raise ConfigError(f"{command} needs a registry: pass --registry HOST[:PORT][/PATH], set STACKBUILD_REGISTRY, "
                          "or set registry in the config file (`stackbuild config show` says which file)")
    return registry


@dataclass(frozen=True)
class Pushed:
    name: str
    digest: str


def push_image(engine: ImageEngine, context: BuildContext, registry: str,
               on_event: OnEvent = lambda event: None) -> tuple[ImageRef, list[Pushed]]:
    """Push the local image of this plan under its content tag and its moving tag."""
    plan = context.plan
    located = locate(engine, context, registry)
    ref, found = located.ref, located.local
    if found is None:
        raise SelectionError(f"{plan.spec} ({plan.target.name}) is not built here as {ref.immutable}: run `stackbuild "
                             f"build {plan.spec} --target {plan.target.name}` first (a changed profile or template "
                             "means a new content tag)")
    _, image_id = found
    pushed = []
    for name in (ref.immutable, ref.moving):
        engine.tag(image_id, name)
        on_event(BuildEvent("note", f"pushing {name}"))
        pushed.append(Pushed(name, engine.push(name, on_event)))
    return ref, pushed


def describe_image(engine: ImageEngine, image: str) -> dict:
    """What an image's labels say: stack, release, target, pins, fixes, content hash, base."""
    labels = engine.labels(image)
    if schema.STACK not in labels:
        raise SelectionError(f"image {image} was not built by stackbuild (it has no {schema.PREFIX}* labels)")
    problems = []
    try:
        pins = json.loads(labels.get(schema.PINS) or "{}")
    except ValueError:
        pins, problems = {}, [f"its {schema.PINS} label is not JSON: {_short(labels[schema.PINS])}"]
    return {
        "image": image,
        "stack": labels.get(schema.STACK),
        "release": labels.get(schema.RELEASE),
        "target": labels.get(schema.TARGET),
        "options": schema.split_list(labels.get(schema.OPTIONS)),
        "content_hash": labels.get(schema.CONTENT_HASH),
        "base": labels.get(schema.BASE) or labels.get(schema.OCI_BASE_NAME),
        "build_host_cpu": labels.get(schema.BUILD_HOST_CPU),
        "pins": pins,
        "fixes": schema.split_list(labels.get(schema.FIXES)),
        "problems": problems,
    }


def pull_prebuilt(engine: ImageEngine, context: BuildContext, registry: str,
                  on_event: OnEvent = lambda event: None, keys: Sequence[tuple[str, object]] = ()
                  ) -> tuple[ImageRef, Pulled]:
    """Pull the prebuilt image the local profile would build (its content tag), its signature (with
    ``keys``) and labels checked."""
    ref = locate(engine, context, registry).ref
    return ref, pull_verified(engine, context.plan, ref, on_event, keys)
