"""`stackbuild devcontainer` with the real Dev Containers CLI (@devcontainers/cli from npm, pinned in
devcontainer-cli/package-lock.json): `devcontainer up` starts the written configuration on the engine,
`devcontainer exec` runs the image's smoke checks inside with the runner `stackbuild test` uses.

The CLI is installed with `npm ci` into a prefix this session owns. The engine here has no bridge
network, so the file is written with the command's own `--network none`, as a user of such an
engine would. The container carries the io.stackbuild.test label (the CLI's --id-label, which it
also finds the container by) and is removed in a finally; so is anything `up` left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import docker.errors
import pytest

from builder.images.containers import HF_HOME, HF_VOLUME, LABEL
from builder.profile.load import load_stack
from builder.smoke.run import parse_result, runner_command

from .conftest import TEST_LABEL, unique

CLI_PACKAGE = Path(__file__).parent / "devcontainer-cli"  # package.json + package-lock.json: the pinned CLI
STACK = "alpaca-lora"


@pytest.fixture(scope="session")
def devcontainer_cli(tmp_path_factory) -> str:
    """The pinned Dev Containers CLI, installed from its lock into a prefix of this session (never globally)."""
    npm = shutil.which("npm")
    if npm is None:
        message = "no npm (Node.js) to install the Dev Containers CLI with"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    prefix = tmp_path_factory.mktemp("devcontainer-cli")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(CLI_PACKAGE / name, prefix / name)
    installed = subprocess.run([npm, "ci", "--prefix", str(prefix), "--no-audit", "--no-fund", "--ignore-scripts"],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    cli = prefix / "node_modules" / ".bin" / "devcontainer"
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=60)
    pinned = json.loads((CLI_PACKAGE / "package.json").read_text())["dependencies"]["@devcontainers/cli"]
    assert version.stdout.strip() == pinned, version
    return str(cli)


def _stackbuild(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, timeout=300)


def _outcome(run: subprocess.CompletedProcess) -> dict:
    """The JSON line the Dev Containers CLI ends `up` and `read-configuration` with."""
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON outcome (exit {run.returncode}):\n{run.stdout}\n{run.stderr}"
    return json.loads(lines[-1])


def test_devcontainer_up_and_exec_run_the_images_smoke_checks(stack_images, docker_client, devcontainer_cli,
                                                               tmp_path):
    release = load_stack(STACK).default_release
    image = stack_images(STACK, release).ref.immutable  # the session's image: nothing is built here
    project = tmp_path / "project"
    project.mkdir()
    (project / "marker.txt").write_text("from the host\n")
    written = _stackbuild("devcontainer", f"{STACK}@{release}", "-t", "cpu", "--network", "none", "-o", str(project))
    assert written.returncode == 0, written.stderr
    config_file = project / ".devcontainer" / "devcontainer.json"
    config = json.loads(config_file.read_text())
    assert config["image"] == image  # the content tag `build` computed

    read = subprocess.run([devcontainer_cli, "read-configuration", "--workspace-folder", str(project)],
                          capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    assert {k: v for k, v in _outcome(read)["configuration"].items() if k != "configFilePath"} == {
        **config, "workspaceMount": f"source={project},target=/workspace,type=bind"}

    id_label = f"{TEST_LABEL}={unique('devcontainer')}"
    volume_before = any(v.name == HF_VOLUME for v in docker_client.volumes.list())
    try:
        up = subprocess.run([devcontainer_cli, "up", "--workspace-folder", str(project), "--id-label", id_label],
                            capture_output=True, text=True, timeout=300)
        outcome = _outcome(up)
        assert up.returncode == 0 and outcome["outcome"] == "success", up.stdout + up.stderr
        assert outcome["remoteUser"] == "root" and outcome["remoteWorkspaceFolder"] == "/workspace"

        # the container is set up as `stackbuild run` sets one up (what the engine may set here)
        info = docker_client.api.inspect_container(outcome["containerId"])
        host = info["HostConfig"]
        assert info["Config"]["Image"] == image and info["Config"]["Labels"][LABEL] == "1"
        assert host["ShmSize"] == 16 * 1024 ** 3 and host["Init"] is True and host["NetworkMode"] == "none"
        limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
        if "may not set the memlock limit" in written.stderr:
            assert limits == {"stack": (67108864, 67108864)}  # this sandboxed engine's, said when written
        else:
            assert limits == {"memlock": (-1, -1), "stack": (67108864, 67108864)}
        assert any(m["Type"] == "volume" and m["Name"] == HF_VOLUME and m["Destination"] == HF_HOME
                   for m in info["Mounts"])
        assert f"HF_HOME={HF_HOME}" in info["Config"]["Env"]
        listed = json.loads(_stackbuild("ps", "--json").stdout)
        assert info["Name"].lstrip("/") in [c["name"] for c in listed]  # stackbuild ps sees it

        where = subprocess.run([devcontainer_cli, "exec", "--workspace-folder", str(project), "--id-label", id_label,
                                "sh", "-c", "pwd && cat marker.txt"], capture_output=True, text=True, timeout=120)
        assert where.returncode == 0 and where.stdout.splitlines()[-2:] == ["/workspace", "from the host"], where

        checks = subprocess.run([devcontainer_cli, "exec", "--workspace-folder", str(project), "--id-label", id_label,
                                 *runner_command()], capture_output=True, text=True, timeout=900)
        results = [r for r in map(parse_result, checks.stdout.splitlines()) if r is not None]
        failed = [r for r in results if r.status == "fail"]
        assert checks.returncode == 0 and results and not failed, checks.stdout + checks.stderr
        manifest = subprocess.run([devcontainer_cli, "exec", "--workspace-folder", str(project), "--id-label",
                                   id_label, "cat", "/opt/stackbuild/manifest.json"], capture_output=True, text=True,
                                  timeout=120)
        expected = {c["name"] if isinstance(c, dict) else c for c in json.loads(manifest.stdout)["checks"]}
        assert {r.check for r in results} == expected  # every check the image lists ran
        shm = next(r for r in results if r.check == "shm")
        assert shm.status == "pass" and "16384 MB" in shm.detail  # the file's --shm-size reached the checks
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": id_label}):
            container.remove(force=True)
        if not volume_before:
            try:
                docker_client.volumes.get(HF_VOLUME).remove()
            except (docker.errors.NotFound, docker.errors.APIError):  # gone, or another run's container uses it
                pass


def test_a_cuda_targets_gpu_request_is_one_the_cli_turns_into_gpus_all(cuda_images, docker_client, devcontainer_cli,
                                                                        tmp_path):
    """hostRequirements.gpu, read by the real CLI: on this host (no NVIDIA runtime) it starts without a GPU
    and says a GPU was required; told the host has GPUs, it runs the container with --gpus all."""
    release = load_stack(STACK).default_release
    image = cuda_images(STACK, release).ref.immutable  # built for test_cuda_engine.py: nothing is built here
    project = tmp_path / "project"
    project.mkdir()
    written = _stackbuild("devcontainer", f"{STACK}@{release}", "-t", "cuda", "--network", "none", "-o", str(project))
    assert written.returncode == 0, written.stderr
    config = json.loads((project / ".devcontainer" / "devcontainer.json").read_text())
    assert config["image"] == image and config["hostRequirements"] == {"gpu": True}
    id_label = f"{TEST_LABEL}={unique('devcontainer-gpu')}"
    up = [devcontainer_cli, "up", "--workspace-folder", str(project), "--id-label", id_label]
    try:
        detected = subprocess.run(up, capture_output=True, text=True, timeout=300)
        outcome = _outcome(detected)
        assert detected.returncode == 0 and outcome["outcome"] == "success", detected.stdout + detected.stderr
        assert "No GPU support found yet a GPU was required" in detected.stdout + detected.stderr
        assert not docker_client.api.inspect_container(outcome["containerId"])["HostConfig"]["DeviceRequests"]
        for container in docker_client.containers.list(all=True, filters={"label": id_label}):
            container.remove(force=True)

        forced = subprocess.run([*up, "--gpu-availability", "all"], capture_output=True, text=True, timeout=300)
        said = forced.stdout + forced.stderr
        assert forced.returncode != 0 and _outcome(forced)["outcome"] == "error", said
        assert "--gpus all" in said and "capabilities: [[gpu]]" in said  # the engine has no GPU to give
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": id_label}):
            container.remove(force=True)
