"""Prebuilt images: find one here, pull one of exactly this content, push one, read its labels.

An image's content tag (identity.py) names exactly what it is, so an image found under it, here
or in a registry, can stand in for a build. A pulled image is still checked: its labels must say
the same stack, release, target, options, pins, fixes and content hash as the local plan, or it
is removed again and not used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .engine import BuildEvent, Engine
from .errors import ConfigError, RegistryError, SelectionError
from .identity import ImageRef, image_ref
from .plan import BuildPlan
from .render import BuildContext

LOCAL_REPOSITORY = "stackbuild"  # where images built without a registry setting are named


def local_names(ref: ImageRef, stack: str) -> list[str]:
    """The names an image of this content may have here: under the registry, or built without one."""
    names = [ref.immutable]
    unregistered = f"{LOCAL_REPOSITORY}/{stack}:{ref.content_tag}"
    if unregistered not in names:
        names.append(unregistered)
    return names


def find_local(engine: Engine, ref: ImageRef, stack: str) -> tuple[str, str] | None:
    """(name, image id) of a local image with this content tag, under either name, or None."""
    for name in local_names(ref, stack):
        info = engine.image(name)
        if info is not None:
            return name, info["Id"]
    return None


def expected_labels(plan: BuildPlan, ref: ImageRef) -> dict[str, str]:
    return {**plan.labels(), "io.stackbuild.content-hash": ref.content_hash}


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


def known_base(engine: Engine, base_ref: str) -> tuple[str | None, bool]:
    """(the base's identity, whether it is here), without pulling: the local image's digest, else the
    digest its registry gives the tag now; (None, False) when neither can be had."""
    identity = engine.local_identity(base_ref)
    if identity is not None:
        return identity, True
    digest = engine.remote_digest(base_ref)
    return (f"{base_ref}@{digest}" if digest else None), False


def resolve_ref(engine: Engine, context: BuildContext, registry: str | None, pull_base: bool = False,
                on_event: Callable[[BuildEvent], None] = lambda event: None) -> tuple[ImageRef, str, bool]:
    """The image's names, the base identity they hash, and whether that base is here already.

    Finding a prebuilt image never costs a base download: the base is pulled only when its digest
    cannot be had otherwise, or when ``pull_base`` asks for a fresh one.
    """
    base_ref = context.plan.target.base.ref
    identity, here = (None, False) if pull_base else known_base(engine, base_ref)
    if identity is None:
        identity, here = engine.base_identity(base_ref, True, on_event), True
    return image_ref(context, identity, registry), identity, here


@dataclass(frozen=True)
class Pulled:
    name: str
    image_id: str


def pull_verified(engine: Engine, plan: BuildPlan, ref: ImageRef,
                  on_event: Callable[[BuildEvent], None] = lambda event: None) -> Pulled:
    """Pull the content tag and check its labels against the plan; RegistryError when either fails."""
    engine.pull(ref.immutable, on_event)
    info = engine.image(ref.immutable)
    if info is None:
        raise RegistryError(f"pulled {ref.immutable} but the engine does not have it")
    labels = dict((info.get("Config") or {}).get("Labels") or {})
    wrong = label_mismatches(labels, plan, ref)
    if wrong:
        engine.untag(ref.immutable)
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


def push_image(engine: Engine, context: BuildContext, registry: str,
               on_event: Callable[[BuildEvent], None] = lambda event: None) -> tuple[ImageRef, list[Pushed]]:
    """Push the local image of this plan under its content tag and its moving tag."""
    plan = context.plan
    ref, _, _ = resolve_ref(engine, context, registry)
    found = find_local(engine, ref, plan.stack.name)
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


def describe_image(engine: Engine, image: str) -> dict:
    """What an image's labels say: stack, release, target, pins, fixes, content hash, base."""
    labels = engine.labels(image)
    if "io.stackbuild.stack" not in labels:
        raise SelectionError(f"image {image} was not built by stackbuild (it has no io.stackbuild.* labels)")
    problems = []
    try:
        pins = json.loads(labels.get("io.stackbuild.pins") or "{}")
    except ValueError:
        pins, problems = {}, [f"its io.stackbuild.pins label is not JSON: {_short(labels['io.stackbuild.pins'])}"]
    return {
        "image": image,
        "stack": labels.get("io.stackbuild.stack"),
        "release": labels.get("io.stackbuild.release"),
        "target": labels.get("io.stackbuild.target"),
        "options": [o for o in (labels.get("io.stackbuild.options") or "").split(",") if o],
        "content_hash": labels.get("io.stackbuild.content-hash"),
        "base": labels.get("io.stackbuild.base") or labels.get("org.opencontainers.image.base.name"),
        "build_host_cpu": labels.get("io.stackbuild.build-host-cpu"),
        "pins": pins,
        "fixes": [f for f in (labels.get("io.stackbuild.fixes") or "").split(",") if f],
        "problems": problems,
    }
