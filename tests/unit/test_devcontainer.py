"""`stackbuild devcontainer`: the devcontainer.json it writes (cpu and cuda targets, run's options), that its
training defaults are run's own, and bad input: a specific error, exit code, and no file half-written.

The real Dev Containers CLI reads and starts what this writes in tests/integration/test_devcontainer_engine.py.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from builder.engine.api import GpuRequest
from builder.errors import ContainerError, UsageError
from builder.images.containers import HF_HOME, HF_VOLUME, LABEL, TRAINING_ULIMITS, RunOptions, run_container, \
    training_setup
from builder.images.devcontainer import ImageFacts, render_devcontainer, run_args
from builder.images.registry import locate
from builder.render.dockerfile import prepare

IMAGE = ImageFacts("stackbuild/qlora:2026.11-cpu-0123456789ab", user="", workdir="/workspace")
VSCODE = {"vscode": {"settings": {"python.defaultInterpreterPath": "/opt/venv/bin/python"},
                     "extensions": ["ms-python.python"]}}


def _render(target: str, **options) -> dict:
    return render_devcontainer(IMAGE, f"qlora@2026.11 ({target})", training_setup(target, RunOptions(**options)))


def test_a_cpu_target_gets_runs_defaults_and_no_gpu():
    assert _render("cpu") == {
        "name": "qlora@2026.11 (cpu)",
        "image": IMAGE.name,
        "runArgs": ["--shm-size=16g", "--ulimit=memlock=-1:-1", "--ulimit=stack=67108864:67108864",
                    f"--label={LABEL}=1"],
        "init": True,
        "mounts": [{"type": "volume", "source": HF_VOLUME, "target": HF_HOME}],
        "containerEnv": {"HF_HOME": HF_HOME},
        "containerUser": "root",
        "remoteUser": "root",
        "workspaceMount": "source=${localWorkspaceFolder},target=/workspace,type=bind",
        "workspaceFolder": "/workspace",
        "overrideCommand": True,
        "customizations": VSCODE,
    }


def test_a_cuda_target_asks_for_every_gpu_through_host_requirements():
    config = _render("cuda")
    assert config["hostRequirements"] == {"gpu": True}
    assert not [a for a in config["runArgs"] if a.startswith("--gpus")]
    assert {k: v for k, v in config.items() if k not in ("hostRequirements", "name")} == \
        {k: v for k, v in _render("cpu").items() if k != "name"}


@pytest.mark.parametrize(("gpus", "arg"), [("2", "--gpus=2"), ("0,1", '--gpus="device=0,1"'),
                                           ("GPU-3f2a", '--gpus="device=GPU-3f2a"')])
def test_a_count_or_ids_of_gpus_go_to_run_args(gpus, arg):
    config = _render("cuda", gpus=gpus)
    assert arg in config["runArgs"] and "hostRequirements" not in config


def test_gpus_none_on_a_cuda_target_and_all_on_a_cpu_one():
    assert "hostRequirements" not in _render("cuda", gpus="none")
    assert _render("cpu", gpus="all")["hostRequirements"] == {"gpu": True}


def test_runs_options_change_the_file_as_they_change_run():
    config = _render("cpu", ipc_host=True, network="none", hf_cache=False, env=["WANDB_MODE=offline", "A=1"],
                     shm_size="2g")
    assert config["runArgs"][:2] == ["--network=none", "--ipc=host"]  # no --shm-size with the host's IPC
    assert "mounts" not in config and config["containerEnv"] == {"A": "1", "WANDB_MODE": "offline"}
    assert "--shm-size=2g" in _render("cpu", shm_size="2g", network="host")["runArgs"]
    assert "--network=host" in _render("cpu", network="host")["runArgs"]


def test_the_images_own_user_and_workdir():
    setup = training_setup("cpu", RunOptions())
    config = render_devcontainer(ImageFacts("x:1", user="trainer", workdir=""), "x", setup)
    assert config["containerUser"] == config["remoteUser"] == "trainer"
    assert "workspaceFolder" not in config and "workspaceMount" not in config  # the tools' default then


@pytest.mark.parametrize("options", [RunOptions(), RunOptions(gpus="0,1", ipc_host=True, env=["A=1"]),
                                     RunOptions(hf_cache=False, shm_size="1g", network="none", gpus="3")],
                         ids=["defaults", "ids-ipc-env", "no-cache-count"])
@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_the_file_says_what_run_asks_the_engine_for(target, options):
    """One place (training_setup) for both: what run starts and what devcontainer writes agree."""
    started = []

    class Engine:
        def start_container(self, image, name, labels, gpus, shm_size=None, **kwargs):
            started.append(dict(labels=labels, gpus=gpus, shm_size=shm_size, **kwargs))
            return "id"

    run_container(Engine(), "img", {}, "x", target, options)
    call, config = started[0], _render(target, **vars(options))
    args = config["runArgs"]
    assert (f"--shm-size={call['shm_size']}" in args) == (call["shm_size"] is not None)
    assert ("--ipc=host" in args) == call["ipc_host"]
    assert [a for a in args if a.startswith("--ulimit=")] == \
        [f"--ulimit={k}={v}:{v}" for k, v in sorted(call["ulimits"].items())]
    assert config.get("containerEnv", {}) == call["env"]
    assert {m["source"]: m["target"] for m in config.get("mounts", [])} == call["volumes"]
    assert config["init"] is call["init"] is True
    assert (f"--label={LABEL}=1" in args) and call["labels"][LABEL] == "1"
    gpu: GpuRequest | None = call["gpus"]
    if gpu is None:
        assert "hostRequirements" not in config and not [a for a in args if a.startswith("--gpus")]
    elif gpu.count == -1:
        assert config["hostRequirements"] == {"gpu": True}
    else:
        assert [a for a in args if a.startswith("--gpus")] == [
            f"--gpus={gpu.count}" if gpu.count else f'--gpus="device={gpu.devices}"']
    assert call["ulimits"] == TRAINING_ULIMITS


def test_host_paths_and_ports_are_not_taken(tmp_path):
    with pytest.raises(UsageError, match="mounts and forwardPorts"):
        render_devcontainer(IMAGE, "x", training_setup("cpu", RunOptions(volumes=[f"{tmp_path}:/d"])))
    with pytest.raises(UsageError, match="mounts and forwardPorts"):
        render_devcontainer(IMAGE, "x", training_setup("cpu", RunOptions(ports=["8888"])))


def test_run_args_are_docker_run_arguments():
    assert run_args(training_setup("cpu", RunOptions(network="bridge"))) == [
        "--shm-size=16g", "--ulimit=memlock=-1:-1", "--ulimit=stack=67108864:67108864", f"--label={LABEL}=1"]


# -- the command, against the fake engine (tests/unit/conftest.py) ---------------------------------

def _built(fake, stack="qlora", release=None, target="cpu") -> str:
    """Put the content-tagged image of a plan (the default release unless named) on the fake engine, as
    `stackbuild build` leaves it."""
    name = locate(fake, prepare(stack, release, target, ()), None).ref.immutable
    fake.images[name] = {"Id": "sha256:" + "1" * 64, "Config": {"Labels": {}, "User": "", "WorkingDir": "/workspace"}}
    return name


def _written(project) -> dict:
    return json.loads((project / ".devcontainer" / "devcontainer.json").read_text())


def test_the_command_writes_the_content_tag_and_says_where(cli, fake, tmp_path):
    image = _built(fake, release="2026.11", target="cuda")
    code, out, err = cli("devcontainer", "qlora@2026.11", "-o", str(tmp_path))
    assert code == 0, err
    config = _written(tmp_path)
    assert config["image"] == image and config["hostRequirements"] == {"gpu": True}
    assert config["name"] == "qlora@2026.11 (cuda)"
    assert f"wrote {tmp_path}/.devcontainer/devcontainer.json for qlora@2026.11 (cuda): {image}" in out
    assert f"devcontainer up --workspace-folder {tmp_path}" in out
    assert fake.containers == {}  # the probe container is gone
    assert [p.name for p in (tmp_path / ".devcontainer").iterdir()] == ["devcontainer.json"]


def test_an_image_built_under_a_registry_is_named_as_the_registry_has_it(cli, fake, tmp_path):
    registry = "registry.example:5000/team"
    name = locate(fake, prepare("qlora", "2026.11", "cpu", ()), registry).ref.immutable
    assert name.startswith(f"{registry}/qlora:2026.11-cpu-")
    fake.images[name] = {"Id": "sha256:" + "2" * 64, "Config": {"Labels": {}, "User": "", "WorkingDir": "/workspace"}}
    code, _, err = cli("devcontainer", "qlora@2026.11", "-t", "cpu", "--registry", registry, "-o", str(tmp_path))
    assert code == 0, err
    assert _written(tmp_path)["image"] == name  # a teammate's `devcontainer up` pulls this content tag


def test_again_is_unchanged_and_a_different_file_needs_force(cli, fake, tmp_path):
    _built(fake)
    assert cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path))[0] == 0
    code, out, _ = cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path))
    assert code == 0 and out.startswith("unchanged: ")
    before = (tmp_path / ".devcontainer" / "devcontainer.json").read_text()
    code, _, err = cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path), "--shm-size", "2g")
    assert code == 5 and err == (f"error: {tmp_path}/.devcontainer/devcontainer.json already exists and says something "
                                 "else: keep it, move it away, or give --force to replace it\n")
    assert (tmp_path / ".devcontainer" / "devcontainer.json").read_text() == before
    code, _, err = cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path), "--shm-size", "2g", "--force")
    assert code == 0, err
    assert "--shm-size=2g" in _written(tmp_path)["runArgs"]


def test_an_engine_that_may_not_raise_memlock_gets_a_file_without_it(cli, fake, tmp_path, monkeypatch):
    _built(fake)
    started = []
    plain = fake.start_container

    def start(image, name, labels, gpus, shm_size=None, **kwargs):
        started.append(dict(kwargs["ulimits"]))
        if "memlock" in kwargs["ulimits"]:
            raise ContainerError(f"cannot start a container from {image}: OCI runtime create failed: error setting "
                                 "rlimits for ready process: error setting rlimit type 8: operation not permitted")
        assert kwargs["network"] == "none" and gpus is None and kwargs["volumes"] == {}  # a probe needs nothing
        return plain(image, name, labels, gpus, shm_size, **kwargs)

    monkeypatch.setattr(fake, "start_container", start)
    code, _, err = cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path))
    assert code == 0, err
    assert err == ("warning: this Docker engine may not set the memlock limit (operation not permitted): written "
                   "without --ulimit memlock=-1; pinned-memory offload and NCCL may be limited\n")
    assert [a for a in _written(tmp_path)["runArgs"] if a.startswith("--ulimit")] == ["--ulimit=stack=67108864:67108864"]
    assert started == [TRAINING_ULIMITS, {"stack": 67108864}] and fake.containers == {}


@pytest.mark.parametrize(("args", "code", "message"), [
    (["nosuch"], 4, "error: unknown stack 'nosuch'; stacks: "),
    (["qlora@1999.01", "-t", "cpu"], 4, "error: stack 'qlora' has no release '1999.01'; releases: "),
    (["qlora", "-t", "rocm"], 4, "error: qlora@2026.12 has no target 'rocm'; targets: cuda, cpu"),
    (["qlora", "-t", "cpu", "--with", "nope"], 4, "error: qlora@2026.12 has no option 'nope'"),
    (["qlora@2023.07", "-t", "cpu"], 4, "is not here: run `stackbuild build qlora@2023.07 --target cpu` first"),
    (["qlora", "-t", "cpu", "--gpus", "two"], 2, "error: --gpus two: use none, all, a count, or device ids like 0,1"),
    (["qlora", "-t", "cpu", "--network", "container:x"], 2, "error: --network container:x: use bridge, host, none"),
    (["qlora", "-t", "cpu", "-e", "NOEQUALS"], 2, "error: --env NOEQUALS: write it as NAME=VALUE"),
    (["qlora", "-t", "cpu", "--shm-size", "lots"], 2, "error: --shm-size lots: write a size like 16g or 512m"),
], ids=["stack", "release", "target", "option", "not-built", "gpus", "network", "env", "shm"])
def test_bad_input_is_refused_by_name_and_writes_nothing(cli, fake, tmp_path, args, code, message):
    _built(fake)
    got, _, err = cli("devcontainer", *args, "-o", str(tmp_path))
    assert got == code and message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == [] and fake.containers == {}


def test_an_output_folder_the_file_cannot_go_into(cli, fake, tmp_path):
    _built(fake)
    code, _, err = cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path / "missing"))
    assert code == 5 and err == (f"error: cannot write {tmp_path}/missing/.devcontainer/devcontainer.json: "
                                 f"{tmp_path}/missing does not exist (give --output the project folder the "
                                 "devcontainer is for)\n")
    (tmp_path / ".devcontainer").write_text("a file, not a folder")
    code, _, err = cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path))
    assert code == 5 and f"{tmp_path}/.devcontainer is not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".devcontainer"] and fake.pulls == []


def test_an_unwritable_folder_leaves_no_half_written_file_or_folder(cli, fake, tmp_path, monkeypatch):
    _built(fake)

    def refused(*args, **kwargs):  # what a read-only or not-ours folder answers (root passes permission bits)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    code, _, err = cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path))
    assert code == 5 and err == f"error: cannot write {tmp_path}/.devcontainer/devcontainer.json: Permission denied\n"
    assert list(tmp_path.iterdir()) == []


def test_a_file_there_that_is_not_a_regular_file_is_never_replaced(cli, fake, tmp_path):
    _built(fake)
    (tmp_path / ".devcontainer").mkdir()
    os.mkfifo(tmp_path / ".devcontainer" / "devcontainer.json")
    code, _, err = cli("devcontainer", "qlora", "-t", "cpu", "-o", str(tmp_path), "--force")
    assert code == 5 and "cannot write" in err and "cannot be read" in err
    assert (tmp_path / ".devcontainer" / "devcontainer.json").is_fifo()


@pytest.mark.parametrize("output", ["dir/", "-", "", ".", "/proc/self", "/dev/null", "x" * 300, "a\nb",
                                    "\x1b[2J", "fifo", "link", "file", "project"])
def test_hostile_output_folders(output, cli, fake, tmp_path, monkeypatch):
    from .test_hostile import _check

    _built(fake)
    monkeypatch.chdir(tmp_path)
    os.mkfifo("fifo")
    os.symlink("target", "link")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "project" / ".devcontainer").mkdir(parents=True)
    (tmp_path / "project" / ".devcontainer" / "devcontainer.json").symlink_to(tmp_path / "file")
    code, out, err = cli("devcontainer", "qlora", "-t", "cpu", "-o", output, "--force")
    _check(code, out, err, f"-o {output!r}")
    assert code in (0, 5), err
    assert Path("fifo").is_fifo() and Path("link").is_symlink() and not Path("target").exists()
    assert (tmp_path / "file").read_text() == "mine" and fake.containers == {}
    if code == 0:
        assert _written(Path(output))["image"].startswith("stackbuild/qlora:2026.12-cpu-")
