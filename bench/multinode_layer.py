"""The multi-node layer's size in built images: what `docker history` says of the step that installs
openssh-server, pdsh and the RDMA libraries, and what that layer holds under apt's caches.

    python bench/multinode_layer.py [IMAGE ...]

Without arguments: the cpu images of this checkout's 2026.11 plans that are built here (by their
content tags). For each image it prints the layer's size, the image's size, and the bytes of
/var/cache/apt and /var/lib/apt/lists in the image (read in a network-less container that is
removed; what is there comes from this layer and the base layer's apt step). Compare two
checkouts' images, or an older content tag of the same plan, to see a change.
"""

from __future__ import annotations

import argparse
import sys

import _shared  # noqa: F401  (the checkout on sys.path)

import docker

from builder.config import load_settings
from builder.engine.connect import connect
from builder.images.lookup import image_of

STACKS = ("alpaca-lora", "deepspeed-zero3-offload", "flash-attn-fsdp", "qlora")
MARK = "openssh-server"  # in the multinode step's command, and in no other step's
CACHES = "du -sb /var/cache/apt /var/lib/apt/lists 2>/dev/null | awk '{s += $1} END {print s}'"


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def measure(client, image: str) -> str:
    layers = [h for h in client.api.history(image) if MARK in (h.get("CreatedBy") or "")]
    if len(layers) != 1:
        return f"{image}: {len(layers)} steps install {MARK} (expected one)"
    total = client.images.get(image).attrs["Size"]
    caches = client.containers.run(image, ["sh", "-c", CACHES], remove=True, network_mode="none",
                                   labels={"io.stackbuild.test": "bench"}).decode().strip()
    return f"{mb(layers[0]['Size']):>10} {mb(total):>10} {mb(int(caches or 0)):>12}  {image}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*")
    args = parser.parse_args()
    client = docker.from_env(version="auto", timeout=300)
    images = list(args.images)
    if not images:
        engine = connect()
        registry = load_settings().registry
        for stack in STACKS:
            try:
                images.append(image_of(engine, f"{stack}@2026.11", "cpu", [], registry))
            except Exception as exc:  # not built here: say so, measure the rest
                print(f"{stack}@2026.11 (cpu): {exc}")
    print(f"{'layer':>10} {'image':>10} {'apt caches':>12}  image")
    for image in images:
        print(measure(client, image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
