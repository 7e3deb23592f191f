"""Image identity: a name, a moving tag, and a content tag that hashes everything the image is.

The content hash covers the rendered Dockerfile, every file of the build context and the base
image (its digest where the engine knows one). Same inputs, same tag: what makes pull-or-build
and shared caches safe. Site settings (index URLs, CA, mirrors) are not inputs: they reach the
build from the loopback site server and change where packages come from, not what they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .dockerfile import BuildContext

HASH_VERSION = b"stackbuild-content-v1"


@dataclass(frozen=True)
class ImageRef:
    """``repository:tag`` names of one image: the moving tag and the immutable content tag."""

    repository: str
    tag: str
    content_hash: str

    @property
    def content_tag(self) -> str:
        return f"{self.tag}-{self.content_hash[:12]}"

    @property
    def moving(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def immutable(self) -> str:
        return f"{self.repository}:{self.content_tag}"


def content_hash(context: BuildContext, base: str) -> str:
    """sha256 over the base reference (with digest), the Dockerfile and every context file."""
    digest = hashlib.sha256()
    digest.update(HASH_VERSION + b"\0")
    for name, data in (("base", base.encode()), ("Dockerfile", context.dockerfile.encode()), *context.files):
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()


def image_ref(context: BuildContext, base: str, registry: str | None) -> ImageRef:
    """The names an image of this context gets: ``<registry>/<stack>:<release>-<target>[-options]``."""
    plan = context.plan
    repository = f"{registry}/{plan.stack.name}" if registry else f"stackbuild/{plan.stack.name}"
    tag = f"{plan.release.name}-{plan.target.name}" + "".join(f"-{o}" for o in plan.options)
    return ImageRef(repository, tag, content_hash(context, base))
