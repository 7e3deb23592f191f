"""Locking again against an index on loopback (tests/unit/loopback_index.py), with uv, no PyPI:
a relock moves only what the changed pin requires, `lock` says what moved, and
`lock --check --resolve` reports drift and a lock it cannot resolve (forged locks: test_hostile.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .loopback_index import LoopbackIndex

PROFILE = Path(__file__).parent / "fixtures" / "relock.yaml"
BEFORE = "2026-10-01T00:00:00Z"  # every upload here is before the release's date, 2026-11-28


@pytest.fixture
def index(monkeypatch):
    with LoopbackIndex() as served:
        served.add("pip", "25.3", BEFORE)
        served.add("torch", "2.10.0", "2026-01-21T00:00:00Z")
        served.add("app", "1.0", BEFORE, ("dep>=1.0",))
        served.add("app", "1.1", BEFORE, ("dep>=1.0",))
        served.add("dep", "0.5", BEFORE)
        served.add("dep", "1.0", BEFORE)
        served.add("other", "2.0", BEFORE)
        monkeypatch.setenv("STACKBUILD_PIP_INDEX_URL", served.url)
        monkeypatch.delenv("STACKBUILD_PIP_EXTRA_INDEX_URL", raising=False)
        monkeypatch.setenv("UV_NO_CACHE", "1")  # every resolution reads the index as it is now
        yield served


@pytest.fixture
def stack(tmp_path):
    shutil.copy(PROFILE, tmp_path / "relock.yaml")
    return tmp_path


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"}


def commit(folder: Path, message: str) -> None:
    """Commit everything in ``folder`` (a git repository made on first use), as a maintainer would."""
    import os
    import subprocess
    env = {**os.environ, **GIT_ENV}
    if not (folder / ".git").exists():
        subprocess.run(["git", "init", "-q", str(folder)], check=True, env=env)
    subprocess.run(["git", "-C", str(folder), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(folder), "commit", "-q", "-m", message], check=True, env=env)


def _versions(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9._-]+)==(\S+)", path.read_text(), re.M))


def _lock(cli, stack: Path, *extra: str) -> str:
    code, out, err = cli("lock", f"{stack / 'relock.yaml'}@2026.11", "-t", "cpu", *extra)
    assert code == 0, err
    return out


def test_a_relock_keeps_a_transitive_package_that_has_a_newer_candidate_unless_asked(cli, index, stack):
    out = _lock(cli, stack)
    lock = stack / "locks" / "relock@2026.11-cpu.txt"
    assert _versions(lock) == {"pip": "25.3", "torch": "2.10.0", "app": "1.0", "dep": "1.0"}
    assert "a new lock: no previous one to compare with" in out
    commit(stack, "lock relock@2026.11")
    index.add("dep", "1.1", "2026-11-01T00:00:00Z")  # uploaded before the date, seen by the index only now
    profile = stack / "relock.yaml"
    profile.write_text(profile.read_text().replace("app==1.0", "app==1.1"))

    out = _lock(cli, stack)
    assert _versions(lock) == {"pip": "25.3", "torch": "2.10.0", "app": "1.1", "dep": "1.0"}
    assert "  [packages] app 1.0 -> 1.1\n" in out and "dep" not in out
    assert "  layers that rebuild: [packages] (the sections before the first changed one stay cached)" in out

    out = _lock(cli, stack)
    assert "nothing moved: the same packages, versions and hashes as the previous lock; no layer rebuilds" in out

    # the relock, checked before and after it is committed: app moved as the inputs say, dep was kept
    # from the previous lock (what the index shows of the date grew: drift, not forgery)
    for when in ("edited", "committed"):
        if when == "committed":
            commit(stack, "app 1.1")
        code, out, err = cli("lock", "--check", "--resolve", f"{stack / 'relock.yaml'}@2026.11", "-t", "cpu")
        assert code == 0, (when, out, err)
        assert "(information) locking afresh today would move: dep 1.0 -> 1.1" in out

    out = _lock(cli, stack, "--upgrade-package", "DEP")
    assert _versions(lock)["dep"] == "1.1" and "  [packages] dep 1.0 -> 1.1\n" in out


def test_upgrade_moves_every_package(cli, index, stack):
    _lock(cli, stack)
    index.add("dep", "1.1", "2026-11-01T00:00:00Z")
    assert _versions(stack / "locks" / "relock@2026.11-cpu.txt")["dep"] == "1.0"
    out = _lock(cli, stack, "--upgrade")
    assert _versions(stack / "locks" / "relock@2026.11-cpu.txt")["dep"] == "1.1" and "dep 1.0 -> 1.1" in out


def test_upgrade_package_names_a_locked_package(cli, index, stack):
    _lock(cli, stack)
    code, _, err = cli("lock", f"{stack / 'relock.yaml'}@2026.11", "-t", "cpu", "--upgrade-package", "nosuch")
    assert code == 2 and "--upgrade-package nosuch: not in the previous lock of relock@2026.11 (cpu)" in err
    code, _, err = cli("lock", "--check", "--upgrade", f"{stack / 'relock.yaml'}@2026.11")
    assert code == 2 and "--upgrade and --upgrade-package go with lock, not with --check" in err
    code, _, err = cli("lock", "--resolve", f"{stack / 'relock.yaml'}@2026.11")
    assert code == 2 and "--resolve goes with --check" in err


def test_check_resolve_fails_when_the_index_cannot_resolve_the_lock(cli, index, stack):
    _lock(cli, stack)
    index.releases.pop("app")
    code, out, err = cli("lock", "--check", "--resolve", f"{stack / 'relock.yaml'}@2026.11", "-t", "cpu")
    assert code == 13 and "unresolved relock@2026.11 (cpu): cannot resolve it again to check it" in out


def test_a_copy_of_a_shipped_stack_without_a_lock_prefers_the_shipped_lock(cli, index, stack, tmp_path, monkeypatch):
    """The issue's repro: copy a shipped profile alone, bump one pin, lock: only that pin moves."""
    _lock(cli, stack)  # `stack` plays the shipped stacks folder, with its committed lock
    monkeypatch.setattr("builder.lock.resolution.stacks_dir", lambda: stack)
    index.add("dep", "1.1", "2026-11-01T00:00:00Z")
    copy = tmp_path / "mine"
    copy.mkdir()
    (copy / "relock.yaml").write_text((stack / "relock.yaml").read_text().replace("app==1.0", "app==1.1"))
    out = _lock(cli, copy)
    assert _versions(copy / "locks" / "relock@2026.11-cpu.txt") == {"pip": "25.3", "torch": "2.10.0", "app": "1.1",
                                                                      "dep": "1.0"}
    assert "no lock beside the profile: preferring the versions of the shipped lock" in out and "[packages] app 1.0 -> 1.1" in out
    out = _lock(cli, copy)  # now its own lock is the previous one
    assert "the shipped lock" not in out and "nothing moved" in out


def test_the_compiler_wheels_and_torchs_cuda_wheels_lock_as_one_cuda_release(cli, index, tmp_path):
    """torch 2.15 reaches CCCL's headers through nvshmem (any version, so alone it takes the newest),
    the compiler wheels through cuda-toolkit[cccl] at the toolkit's release: torch's section is resolved
    with the compiler, so both take the toolkit's CCCL (alone, torch's section took 13.3 and the
    compiler could not be locked: "cuda-toolkit[cccl]==13.2.2 cannot be used"); and the toolkit's
    extras are no part of the package names the profile's own pins exempt from the date."""
    toolkit = ("nvidia-cuda-cccl==13.2.86.*; extra == \"cccl\"", "nvidia-cuda-nvcc==13.2.86.*; extra == \"nvcc\"",
               "nvidia-cuda-crt==13.2.86.*; extra == \"crt\"", "nvidia-nvvm==13.2.86.*; extra == \"nvvm\"")
    index.add("cuda-toolkit", "13.2.2", BEFORE, toolkit)
    index.add("nvidia-nvshmem-cu13", "3.7.2", BEFORE, ("nvidia-cuda-cccl",))
    index.add("torch", "2.15.0", "2026-10-28T00:00:00Z", ("cuda-toolkit==13.2.2", "nvidia-nvshmem-cu13"))
    for name in ("nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm"):
        index.add(name, "13.2.86", BEFORE)
    index.add("nvidia-cuda-cccl", "13.2.86", BEFORE)
    index.add("nvidia-cuda-cccl", "13.3.4.3.1", BEFORE)
    index.add("ext", "1.0", BEFORE)
    shutil.copy(PROFILE.with_name("relock-toolkit.yaml"), tmp_path / "relock-toolkit.yaml")
    code, out, err = cli("lock", f"{tmp_path / 'relock-toolkit.yaml'}@2026.12", "-t", "cuda")
    assert code == 0, err
    lock = (tmp_path / "locks" / "relock-toolkit@2026.12-cuda.txt").read_text()
    sections = dict(re.findall(r"^# \[([a-z:-]+)\]\n(.*?)(?=^# \[|\Z)", lock, re.M | re.S))
    assert _versions_in(sections["torch"])["nvidia-cuda-cccl"] == "13.2.86"
    assert _versions_in(sections["toolkit"]) == {"nvidia-cuda-crt": "13.2.86", "nvidia-cuda-nvcc": "13.2.86",
                                                 "nvidia-nvvm": "13.2.86"}
    # and the lock, [toolkit] section included, is one that lock --check (its seal) accepts
    code, out, err = cli("lock", "--check", f"{tmp_path / 'relock-toolkit.yaml'}@2026.12", "-t", "cuda")
    assert code == 0, err + out


def _versions_in(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9._-]+)==(\S+)", text, re.M))
