"""Locks for real: uv resolves the committed lock again byte for byte (PyPI, as of the release's
date), and two builds of one release - the second from nothing, no cache - install exactly the same
packages, which are the lock's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import docker.errors
import pytest

from builder.images.build import build_image
from builder.render.dockerfile import prepare

from .conftest import FIXTURES, TEST_LABEL

ROOT = Path(__file__).resolve().parents[2]
FREEZE = str(FIXTURES / "freezeprobe.yaml")


def test_locking_again_gives_the_committed_lock_byte_for_byte(tmp_path):
    (tmp_path / "locks").mkdir()
    shutil.copy(ROOT / "stacks" / "qlora.yaml", tmp_path / "qlora.yaml")
    run = subprocess.run([sys.executable, "-m", "builder", "lock", f"{tmp_path / 'qlora.yaml'}@2023.07", "-t", "cpu"],
                         capture_output=True, text=True, timeout=900, env=os.environ)
    assert run.returncode == 0, run.stderr
    made = (tmp_path / "locks" / "qlora@2023.07-cpu.txt").read_text()
    committed = (ROOT / "stacks" / "locks" / "qlora@2023.07-cpu.txt").read_text()
    pinned = len(re.findall(r"^[A-Za-z0-9][\w.-]*==", committed, re.M))
    assert pinned > 60 and f"locked qlora@2023.07 (cpu): {pinned} packages" in run.stdout
    # the resolver's version, and so the header's seal, may differ; everything else may not
    strip = lambda text: [line for line in text.splitlines()  # noqa: E731
                          if not line.startswith(("# resolver: ", "# sha256 header: "))]
    assert strip(made) == strip(committed)


def test_relocking_after_a_one_pin_bump_moves_only_that_pin(tmp_path):
    """The issue-27 repro: qlora@2026.11's peft 0.21.2 -> 0.21.1, locked again a week later with the
    committed lock beside it; PyPI's view of 2026-11-28 has grown since (httpx, regex), yet only peft moves."""
    (tmp_path / "locks").mkdir()
    profile = (ROOT / "stacks" / "qlora.yaml").read_text()
    start = profile.index('\n  "2026.11":\n')
    end = profile.index('\n  "', start + 1)  # the next release's block
    block = profile[start:end]
    assert block.count("- peft==0.21.2\n") == 1
    (tmp_path / "qlora.yaml").write_text(profile[:start] + block.replace("- peft==0.21.2\n", "- peft==0.21.1\n")
                                         + profile[end:])
    committed = (ROOT / "stacks" / "locks" / "qlora@2026.11-cpu.txt").read_text()
    (tmp_path / "locks" / "qlora@2026.11-cpu.txt").write_text(committed)
    run = subprocess.run([sys.executable, "-m", "builder", "lock", f"{tmp_path / 'qlora.yaml'}@2026.11", "-t", "cpu"],
                         capture_output=True, text=True, timeout=900, env=os.environ)
    assert run.returncode == 0, run.stderr
    # the plain lock first; then the release's options (`+lomo`), each locked preferring the plain lock
    assert run.stdout.splitlines()[1:3] == ["  [last] peft 0.21.2 -> 0.21.1", "  layers that rebuild: [last] (the "
                                            "sections before the first changed one stay cached)"]
    pins = lambda text: re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", text, re.M)  # noqa: E731
    made = (tmp_path / "locks" / "qlora@2026.11-cpu.txt").read_text()
    assert sorted(set(pins(made)) ^ set(pins(committed))) == [("peft", "0.21.1"), ("peft", "0.21.2")]
    with_lomo = (tmp_path / "locks" / "qlora@2026.11-cpu+lomo.txt").read_text()
    assert "  [last] lomo-optim added 0.1.1" in run.stdout.splitlines()[3:]
    assert sorted(set(pins(with_lomo)) - set(pins(made))) == [("lomo-optim", "0.1.1")]
    assert set(pins(made)) <= set(pins(with_lomo))


def _freeze(docker_client, image: str) -> str:
    return docker_client.containers.run(image, ["pip", "freeze", "--all"], network_mode="none", remove=True,
                                        labels={TEST_LABEL: "1"}).decode()


def test_two_builds_one_from_nothing_install_the_same_packages_which_are_the_lock(
        own_build_cache, stack_images, settings, docker_client):
    stack_images("alpaca-lora", "2026.11")  # the torch layer comes from the cache for the first build
    context = prepare(FREEZE, None, "cpu", ())
    first = build_image(context, settings, use_registry=False, extra_labels={TEST_LABEL: "1"})
    first_freeze = _freeze(docker_client, first.image_id)
    cold = None
    try:
        cold = build_image(prepare(FREEZE, None, "cpu", ()), settings, nocache=True, use_registry=False,
                           extra_labels={TEST_LABEL: "1"})
        # nothing from the cache (BuildKit reports the base image, a source, as cached even then)
        assert cold.source == "built" and cold.cached_steps <= 1 and cold.image_id != first.image_id
        assert cold.ref == first.ref  # the same content tag
        cold_freeze = _freeze(docker_client, cold.image_id)
    finally:
        for image in {first.image_id, *(c.image_id for c in [cold] if c)}:
            try:
                docker_client.images.remove(image, force=True)
            except docker.errors.ImageNotFound:
                pass
    assert cold_freeze == first_freeze
    locked = sorted(f"{name}=={version}" for name, version in context.plan.lock.versions().items())
    frozen = sorted(re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() + "==" + line.split("==")[1]
                    for line in first_freeze.splitlines())
    assert frozen == locked


@pytest.mark.parametrize("name", ["registryprobe", "tokenprobe", "freezeprobe"])
def test_the_fixture_locks_fit(name):
    run = subprocess.run([sys.executable, "-m", "builder", "lock", str(FIXTURES / f"{name}.yaml"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
