"""Hostile input on the real engine (issue 26): `exec` stops what it started on SIGTERM and Ctrl-C,
and an image's labels are data, never paths."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import docker.errors
import pytest

from builder.images.containers import LABEL

from .conftest import TEST_LABEL, unique

BASE = "debian:bookworm-slim"


def _base(docker_client) -> str:
    try:
        docker_client.images.get(BASE)
    except docker.errors.ImageNotFound:
        docker_client.images.pull(BASE)
    return BASE


@pytest.fixture
def stackbuild_container(docker_client):
    """A running container stackbuild takes for its own (its label), from a small image."""
    name = unique("sbtest-exec")
    container = docker_client.containers.run(_base(docker_client), ["sleep", "infinity"], name=name, detach=True,
                                             init=True, network_mode="none",
                                             labels={LABEL: "1", TEST_LABEL: "1"})
    yield container
    container.remove(force=True)


def _processes(container) -> list[str]:
    return [" ".join(p[-1:]) for p in container.top(ps_args="-eo pid,args")["Processes"]]


@pytest.mark.parametrize("sig,code,said", [(signal.SIGTERM, 143, "error: terminated\n"),
                                           (signal.SIGINT, 130, "error: interrupted\n")])
def test_exec_stops_its_command_when_stackbuild_is_stopped(stackbuild_container, sig, code, said):
    container = stackbuild_container
    proc = subprocess.Popen([sys.executable, "-m", "builder", "exec", container.name, "--", "sh", "-c",
                             "sleep 1234 & sleep 4321"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any("sleep 4321" in p for p in _processes(container)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any("sleep 1234" in p for p in _processes(container)), _processes(container)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stderr) == (code, said)
    left = [p for p in _processes(container) if "sleep 1234" in p or "sleep 4321" in p or "sh -c" in p]
    assert not left, f"still running in the container after {sig.name}: {left}"
    assert container.reload() is None and container.status == "running"  # the container itself stays


def test_a_label_naming_a_file_is_refused_not_read(docker_client, tmp_path):
    """An image labelled io.stackbuild.stack=/etc/passwd (or a path to a profile) makes doctor refuse
    the label; the file is never read, its lines never printed."""
    secret = tmp_path / "secret.yaml"
    secret.write_text("TOPSECRET_FIELD: 1\n")
    log = tmp_path / "x.log"
    log.write_text("Killed\n")
    made = docker_client.containers.create(_base(docker_client), ["true"], labels={TEST_LABEL: "1"})
    tag = f"stackbuild-test/{unique('label')}:latest"
    try:
        made.commit(repository=tag.rsplit(":", 1)[0], tag="latest",
                    changes=[f"LABEL io.stackbuild.stack={secret} {TEST_LABEL}=1", "LABEL io.stackbuild.release=x"])
        for args in (["doctor", str(log), "--image", tag], ["inspect", tag, "--json"]):
            done = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True,
                                  timeout=120)
            assert "TOPSECRET" not in done.stdout + done.stderr and "Traceback" not in done.stderr
            if args[0] == "doctor":
                assert done.returncode == 4 and "is not a stack or release name" in done.stderr, done.stderr
            else:
                assert done.returncode == 0 and '"matches_profile": null' in done.stdout, done.stderr
    finally:
        made.remove(force=True)
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
