"""Smoke checks inside real cpu images: every check passes, and each is shown able to fail."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from builder.checks import COMMON_CHECKS
from builder.engine import BuildLog, Engine
from builder.smoke import run_smoke

from .conftest import TEST_LABEL, github_reachable, unique
from .test_build_engine import GIT_ONLY, RELEASES


@pytest.fixture(scope="module")
def engine(docker_client):
    connected = Engine.connect(timeout=900)
    yield connected
    connected.close()


@pytest.mark.parametrize(("stack", "release"), RELEASES, ids=[f"{s}@{r}" for s, r in RELEASES])
def test_every_check_passes_in_every_cpu_image(stack, release, stack_images, engine, docker_client):
    if (stack, release) in GIT_ONLY and not github_reachable():
        pytest.skip(f"{stack}@{release} cannot be built here (GitHub pins; see test_build_engine)")
    image = stack_images(stack, release).ref.immutable
    before = {c.id for c in docker_client.containers.list(all=True)}
    report = run_smoke(engine, image)
    statuses = {r.check: r.status for r in report.results}
    assert list(statuses) == [c.name for c in COMMON_CHECKS]
    assert report.ok, [r for r in report.results if r.status == "fail"]
    # Docker's default /dev/shm (64 MB) is what a plain container gets: the check warns, never passes
    assert statuses["shm"] == "warn"
    assert {c.id for c in docker_client.containers.list(all=True)} == before


def test_the_cli_runs_the_checks_with_json_and_junit(stack_images, tmp_path):
    stack_images("qlora", "2026.11")
    junit = tmp_path / "report.xml"
    run = subprocess.run([sys.executable, "-m", "builder", "test", "qlora", "-t", "cpu", "--json", "--junit", str(junit)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] and {r["check"] for r in report["results"]} == {c.name for c in COMMON_CHECKS}
    assert junit.read_text().startswith("<?xml") and 'failures="0"' in junit.read_text()


# Each case breaks what one check guards, in an image derived offline from a built one, and names the
# message the check must give.
BREAKS = [
    ("pins", "pip uninstall -y fire", "fire is not installed"),
    ("pip-check", "pip uninstall -y tqdm", "pip check: "),
    ("torch-compile", "rm -f /usr/bin/gcc* /usr/bin/cc /usr/bin/c++ /usr/bin/g++* /usr/bin/x86_64-linux-gnu-g*",
     "torch.compile failed"),
]


@pytest.mark.parametrize(("check", "command", "message"), BREAKS, ids=[b[0] for b in BREAKS])
def test_each_check_fails_when_what_it_guards_is_broken(check, command, message, stack_images, engine, docker_client):
    image = stack_images("alpaca-lora", "2023.04").ref.immutable
    broken = f"stackbuild-test/{unique('broken-' + check)}:latest"
    dockerfile = f"FROM {image}\nRUN {command}\n"
    engine.build(dockerfile, (), broken, {TEST_LABEL: "1"}, "none", False, {}, BuildLog(), lambda event: None)
    try:
        report = run_smoke(engine, broken)
    finally:
        docker_client.images.remove(broken, force=True)
    results = {r.check: r for r in report.results}
    assert not report.ok and results[check].status == "fail"
    assert message in results[check].detail
    # the other checks still pass: each check fails only for what it guards
    others = {name for name, r in results.items() if r.status == "fail"} - {check}
    assert others <= ({"pins"} if check == "pip-check" else set())
