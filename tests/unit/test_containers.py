"""Working containers against a fake engine: options, defaults, names, and what is refused."""

from __future__ import annotations

import pytest

from builder.images.containers import (HF_HOME, HF_VOLUME, LABEL, RunOptions, default_name, find, list_containers,
                                parse_binds, parse_env, parse_ports, run_container, running, shell_argv)
from builder.errors import ContainerError, SelectionError, UsageError


class _Engine:
    def __init__(self, containers=None):
        self.started: list[dict] = []
        self.known = containers or {}

    def start_container(self, image, name, labels, gpus, shm_size=None, **kwargs):
        self.started.append(dict(image=image, name=name, labels=labels, gpus=gpus, shm_size=shm_size, **kwargs))
        return "cid-" + name

    def container(self, name):
        return self.known.get(name)

    def containers(self, label):
        return [info for info in self.known.values() if label in info["Config"]["Labels"]]


def _info(name, running=True, ours=True):
    labels = {LABEL: "1", "io.stackbuild.stack": "alpaca-lora", "io.stackbuild.release": "2026.11",
              "io.stackbuild.target": "cpu"} if ours else {}
    return {"Name": "/" + name, "Config": {"Labels": labels, "Image": "img:1"},
            "State": {"Running": running, "Status": "running" if running else "exited"}}


def test_training_defaults_and_how_to_enter(tmp_path):
    engine = _Engine()
    started = run_container(engine, "img:1", {"io.stackbuild.stack": "alpaca-lora"}, "al", "cpu",
                            RunOptions(volumes=[f"{tmp_path}:/work:ro"], env=["A=1"], ports=["8888", "7000:7001"],
                                       workdir="/work"))
    call = engine.started[0]
    assert call["labels"] == {LABEL: "1", "io.stackbuild.stack": "alpaca-lora"}
    assert call["gpus"] is None and call["shm_size"] == "16g"  # no GPU request: none for a cpu target
    assert call["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert call["binds"] == [f"{tmp_path}:/work:ro"] and call["volumes"] == {HF_VOLUME: HF_HOME}
    assert call["env"] == {"A": "1", "HF_HOME": HF_HOME} and call["workdir"] == "/work"
    assert call["ports"] == {"8888/tcp": None, "7001/tcp": 7000} and call["network"] == "bridge"
    assert started.enter_lines() == ["docker exec -it al bash", "stackbuild shell al"]


def test_a_cuda_image_gets_every_gpu_unless_told_otherwise():
    engine = _Engine()
    run_container(engine, "img", {}, "x", "cuda", RunOptions())
    run_container(engine, "img", {}, "y", "cuda", RunOptions(gpus="0,1", as_host_user=True, hf_cache=False))
    assert [c["gpus"].devices for c in engine.started] == ["all", "0,1"]
    assert [(c["gpus"].count, c["gpus"].device_ids) for c in engine.started] == [(-1, None), (None, ["0", "1"])]
    assert engine.started[1]["user"] and engine.started[1]["volumes"] == {}
    assert engine.started[1]["env"] == {"HOME": "/tmp"}


@pytest.mark.parametrize(("options", "message"), [
    (RunOptions(name="bad name"), "--name bad name: use letters, digits"),
    (RunOptions(shm_size="lots"), "--shm-size lots: write a size like 16g or 512m"),
    (RunOptions(gpus="two"), "--gpus two: use none, all, a count, or device ids like 0,1"),
    (RunOptions(workdir="work"), "--workdir work: must be an absolute path inside the container"),
    (RunOptions(volumes=["/definitely/not/here:/x"]), "-v /definitely/not/here:/x: /definitely/not/here does not "
                                                      "exist on this host"),
    (RunOptions(volumes=["/tmp:relative"]), "-v /tmp:relative: the path inside the container must be absolute"),
    (RunOptions(volumes=["/tmp"]), "-v /tmp: write it as SRC:DST or SRC:DST:ro"),
    (RunOptions(env=["NOEQUALS"]), "--env NOEQUALS: write it as NAME=VALUE"),
    (RunOptions(ports=["http"]), "-p http: write it as CONTAINER_PORT or HOST_PORT:CONTAINER_PORT"),
    (RunOptions(ports=["70000"]), "-p 70000: write it as CONTAINER_PORT or HOST_PORT:CONTAINER_PORT"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_options_are_refused_before_anything_is_created(options, message):
    engine = _Engine()
    with pytest.raises(UsageError) as error:
        run_container(engine, "img", {}, "x", "cpu", options)
    assert str(error.value).startswith(message) and engine.started == []
    assert error.value.exit_code == 2


def test_parsers():
    assert parse_env(["A=b=c", "B="]) == {"A": "b=c", "B": ""}
    assert parse_ports(["22:2222"]) == {"2222/tcp": 22}
    assert parse_binds([]) == []


def test_default_name_is_a_valid_container_name():
    assert default_name("flash-attn-fsdp", "2023.06", "cuda") == "flash-attn-fsdp-202306-cuda"


def test_only_stackbuild_containers_are_listed_and_touched():
    engine = _Engine({"mine": _info("mine"), "stopped": _info("stopped", running=False),
                      "theirs": _info("theirs", ours=False)})
    assert [(c.name, c.status, c.stack) for c in list_containers(engine)] == [
        ("mine", "running", "alpaca-lora@2026.11 (cpu)"), ("stopped", "exited", "alpaca-lora@2026.11 (cpu)")]
    assert find(engine, "mine")["Name"] == "/mine"
    with pytest.raises(SelectionError, match=r"^theirs: not a stackbuild container \(use docker directly\); "
                                             r"stackbuild's containers: mine, stopped$"):
        find(engine, "theirs")
    with pytest.raises(SelectionError, match=r"^nope: no container; stackbuild's containers: mine, stopped$"):
        find(engine, "nope")
    with pytest.raises(ContainerError, match=r"^stopped is not running \(exited\): docker start stopped"):
        running(engine, "stopped")
    with pytest.raises(SelectionError, match=r"start one with stackbuild run STACK"):
        find(_Engine(), "x")


def test_the_shell_is_docker_exec_it(monkeypatch):
    engine = _Engine({"mine": _info("mine")})
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/docker" if name == "docker" else None)
    assert shell_argv(engine, "mine") == ["/usr/bin/docker", "exec", "-it", "mine", "bash"]
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ContainerError, match=r"stackbuild exec mine -- CMD"):
        shell_argv(engine, "mine")


class _NoMemlockEngine(_Engine):
    def start_container(self, image, name, labels, gpus, shm_size=None, **kwargs):
        if "memlock" in kwargs["ulimits"]:
            raise ContainerError(f"cannot start a container from {image}: OCI runtime create failed: error setting "
                                 "rlimits for ready process: error setting rlimit type 8: operation not permitted")
        return super().start_container(image, name, labels, gpus, shm_size, **kwargs)


def test_an_engine_that_may_not_raise_memlock_starts_without_it_and_says_so():
    engine = _NoMemlockEngine()
    started = run_container(engine, "img", {}, "x", "cpu", RunOptions())
    assert engine.started[0]["ulimits"] == {"stack": 67108864}
    assert started.warnings == ("this Docker engine may not set the memlock limit (operation not permitted): "
                                "started without --ulimit memlock=-1; pinned-memory offload and NCCL may be limited",)


def test_other_start_errors_are_not_retried():
    class _Broken(_Engine):
        def start_container(self, *args, **kwargs):
            raise ContainerError("cannot start: no such runtime")

    with pytest.raises(ContainerError, match="no such runtime"):
        run_container(_Broken(), "img", {}, "x", "cpu", RunOptions())


def test_a_name_the_engine_would_read_as_a_path_is_no_container():
    class _PathEngine(_Engine):
        def container(self, name):
            self.asked = name
            return [_info("mine")]  # what GET /containers/x/../json answers: the list endpoint

    engine = _PathEngine({"mine": _info("mine")})
    for name in ("x/..", "../x", "", ".", "a b", "\x1b[2J"):
        with pytest.raises(SelectionError, match=r"no container; stackbuild's containers: mine$"):
            find(engine, name)
        assert not hasattr(engine, "asked")
    with pytest.raises(SelectionError, match="no container"):
        find(engine, "mine")  # the engine answered a list, not one container


@pytest.mark.parametrize(("network", "name", "hostname"), [
    ("none", "stackbuild-smoke-qlora-1a2b", "stackbuild-smoke-qlora-1a2b"),
    ("none", "Box_1", "stackbuild"),  # not a hostname: the fixed one
    ("bridge", "box", None),  # the network's own /etc/hosts line names the container
])
def test_a_container_without_a_network_can_resolve_its_own_hostname(network, name, hostname):
    """torch 2.15's torchrun connects to its own host by name; Docker writes no /etc/hosts line for the hostname
    of a container without a network, so the engine names it and maps that name to 127.0.0.1."""
    from builder.engine.classic import DockerEngine

    class Client:
        host_config: dict = {}
        create: dict = {}

        def create_host_config(self, **kwargs):
            Client.host_config = kwargs
            return kwargs

        def create_container(self, image, **kwargs):
            Client.create = kwargs
            return {"Id": "c1"}

        def start(self, container):
            return None

    DockerEngine(Client(), "unix:///fake.sock").start_container("img:1", name, {"io.stackbuild.container": "1"}, None,
                                                                network=network)
    assert Client.create["hostname"] == hostname
    assert Client.host_config["extra_hosts"] == ({hostname: "127.0.0.1"} if hostname else None)


def test_a_container_removed_between_list_and_inspect_is_gone_not_an_error():
    """`ps`, and the smoke runner's sweep of earlier runs' containers, list by label and inspect each; a --rm
    container that finishes in between is simply not there (CI saw NotFound escape from the same race)."""
    import docker.errors
    import requests

    from builder.engine.classic import DockerEngine

    class Client:
        def containers(self, all, filters):
            return [{"Id": "gone"}, {"Id": "here"}]

        def inspect_container(self, cid):
            if cid == "gone":
                response = requests.Response()
                response.status_code = 404
                raise docker.errors.NotFound("No such container: gone", response=response)
            return {"Id": cid, "State": {"Status": "running"}}

    assert DockerEngine(Client(), "unix:///fake.sock").containers("io.stackbuild.smoke") == [
        {"Id": "here", "State": {"Status": "running"}}]
