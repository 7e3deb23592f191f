"""Content tags: same inputs, same tag; any input that changes the image changes it."""

from __future__ import annotations

from dataclasses import replace

from builder.render.identity import content_hash, image_ref
from builder.plan.build_plan import plan_build
from builder.profile.load import load_stack
from builder.render.dockerfile import render_context

BASE = "debian:bookworm-slim@sha256:" + "a" * 64


def _context(stack="qlora", release="2026.11", target="cpu", options=()):
    return render_context(plan_build(load_stack(stack), release, target, options))


def test_same_inputs_same_tag():
    assert image_ref(_context(), BASE, None) == image_ref(_context(), BASE, None)


def test_names():
    ref = image_ref(_context(), BASE, "localhost:5000/sb")
    assert ref.moving == "localhost:5000/sb/qlora:2026.11-cpu"
    assert ref.immutable == f"localhost:5000/sb/qlora:2026.11-cpu-{ref.content_hash[:12]}"
    assert image_ref(_context("flash-attn-fsdp", "2023.06", "cuda", ("xformers",)), BASE, None).moving == \
        "stackbuild/flash-attn-fsdp:2023.06-cuda-xformers"


def test_every_input_counts():
    ctx = _context()
    original = content_hash(ctx, BASE)
    assert content_hash(ctx, BASE.replace("a" * 64, "b" * 64)) != original
    assert content_hash(replace(ctx, dockerfile=ctx.dockerfile + "\n"), BASE) != original
    files = dict(ctx.files)
    files["manifest.json"] = files["manifest.json"] + b" "
    assert content_hash(replace(ctx, files=tuple(sorted(files.items()))), BASE) != original
    # moving bytes between the Dockerfile and a file must not collide
    assert content_hash(replace(ctx, files=()), BASE) != original


def test_releases_and_targets_differ():
    hashes = {image_ref(_context(s, r, t), BASE, None).content_hash
              for s, r, t in [("qlora", "2026.11", "cpu"), ("qlora", "2023.07", "cpu"), ("alpaca-lora", "2026.11", "cpu")]}
    assert len(hashes) == 3
