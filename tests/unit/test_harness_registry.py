""".ci/harness.sh's registry clean-up, driven through its own function (the script defines it when sourced).

A stand-in `docker-registry` on PATH records the garbage collection it is asked for, so nothing here
touches the host's registry."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / ".ci" / "harness.sh"


def prune(tmp_path: Path, registry_dir: Path) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "docker-registry"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ncp "$2" {tmp_path}/gc-config.yml\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "STACKBUILD_REGISTRY_DIR": str(registry_dir)}
    return subprocess.run(["bash", "-c", 'source "$1"; prune_registry', "harness", str(HARNESS)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_what_test_runs_pushed_is_dropped_and_collected_and_the_bases_stay(tmp_path):
    registry = tmp_path / "registry"
    repos = registry / "docker" / "registry" / "v2" / "repositories"
    for name in ("library/debian", "stackbuild-test", "stackbuild-test-cache", "stackbuild-bench/qlora", "acme/app"):
        (repos / name / "_manifests").mkdir(parents=True)
    run = prune(tmp_path, registry)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "registry-storage: 3 test repositories dropped\n"
    assert sorted(p.name for p in repos.iterdir()) == ["acme", "library"]
    (call,) = (tmp_path / "calls").read_text().splitlines()
    assert call.startswith("garbage-collect ")
    assert f"rootdirectory: {registry}" in (tmp_path / "gc-config.yml").read_text()


def test_nothing_to_drop_means_no_garbage_collection(tmp_path):
    registry = tmp_path / "registry"
    (registry / "docker" / "registry" / "v2" / "repositories" / "library" / "debian").mkdir(parents=True)
    run = prune(tmp_path, registry)
    assert run.returncode == 0 and run.stdout == "registry-storage: 0 test repositories dropped\n"
    assert not (tmp_path / "calls").exists()
