"""Two containers train together, as two nodes of a cluster would (issue 22).

- deepspeed-zero3-offload@2026.11 (cpu): DeepSpeed's own launcher on node1 reads a hostfile and
  starts one rank on each node over pdsh and ssh (stackbuild-sshd in each container, host keys
  made at start, the job's key pair); ZeRO-3 partitions a tiny model across them (gloo).
- flash-attn-fsdp@2026.11 (cpu): `torchrun --nnodes 2` on each node meets through c10d
  rendezvous on node1's address; FSDP trains and rank 0 saves one full state dict.
- the same image under a real Slurm (controller and two node daemons), from the batch script
  `stackbuild launch slurm` writes.
Both are checked on what they wrote: the same steps on both ranks, the loss averaged over the
ranks equal on both and falling, each rank holding part of the model, and the saved files.
Nodes are containers in a network namespace the test makes (loopback only), on 127.0.0.2 and
127.0.0.3 (tests/integration/nodes.py). Each run's logs are checked to name no address off
loopback, with c10d logging every store connection and request (TORCH_CPP_LOG_LEVEL=INFO).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.commands import app

from .conftest import FIXTURES, RUN_ID, RUN_LABEL, TEST_LABEL, sweep
from .nodes import (JOB, SANDBOX_HOST, deepspeed_command, free_port, interfaces, make_job, name_args, name_files,
                    non_loopback, remove_container, run_on_all, start_nodes, start_sandbox, stop_nodes,
                    torchrun_command, write_hostfile)

SCRIPTS = FIXTURES / "multinode"
STEPS = 6

LOAD_SAVED = r"""
import json, sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
print(json.dumps({k: list(v.shape) for k, v in state.items()}))
"""
FULL_SHAPES = {"0.weight": [64, 16], "0.bias": [64], "2.weight": [1, 64], "2.bias": [1]}


def _ranks(out: Path, world: int) -> list[list[dict]]:
    ranks = []
    for rank in range(world):
        path = out / f"rank{rank}.jsonl"
        assert path.is_file(), f"rank {rank} wrote no log"
        ranks.append([json.loads(line) for line in path.read_text().splitlines()])
    return ranks


def _check_trained_together(ranks: list[list[dict]], nodes: list[str]) -> None:
    steps = [[r["step"] for r in rank] for rank in ranks]
    assert steps == [list(range(1, STEPS + 1))] * len(ranks), steps
    assert [rank[0]["host"] for rank in ranks] == nodes  # one rank on each node
    assert all(rank[0]["world"] == len(ranks) for rank in ranks)
    for records in zip(*ranks):  # the loss averaged over the ranks: one value on every rank
        means = [r["mean_loss"] for r in records]
        assert max(means) - min(means) < 1e-5, means
    mean = [r["mean_loss"] for r in ranks[0]]
    assert mean[-1] < mean[0] * 0.9, f"the loss did not fall: {mean}"
    total = ranks[0][0]["total"]
    held = [rank[0]["held"] for rank in ranks]
    assert all(0 < h < total for h in held) and sum(held) >= total, (held, total)  # partitioned


NAMES = {"localhost", SANDBOX_HOST, "node1", "node2"}  # the job's hosts file: all on 127.0.0.x
CONNECTED = "The client socket has connected to"  # c10d at INFO: one line per store connection, both ends


def _check_loopback_only(log: str) -> None:
    """The run's logs name c10d's connections, and every address in them is on loopback."""
    assert CONNECTED in log, "c10d logged no connection (TORCH_CPP_LOG_LEVEL=INFO not in effect?)"
    assert non_loopback(log, NAMES) == []


def _saved_shapes(node, path: str) -> dict:
    code, out = node.exec(["python", "-c", LOAD_SAVED, path])
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def job(tmp_path):
    folder = tmp_path / "job"
    make_job(folder, [SCRIPTS / "zero3_train.py", SCRIPTS / "fsdp_train.py"])
    return folder


def test_deepspeed_launcher_trains_zero3_across_two_containers_over_pdsh_and_ssh(docker_client, stack_images, job):
    image = stack_images("deepspeed-zero3-offload", "2026.11").image_id
    ssh_port = free_port()
    nodes = start_nodes(docker_client, image, job, ssh_port=ssh_port)
    try:
        assert interfaces(nodes[0]) == ["lo"]  # the namespace the nodes share has nothing but loopback
        write_hostfile(job, nodes)
        code, out = nodes[0].exec(deepspeed_command(nodes, free_port(), ssh_port, "zero3_train.py", "--out",
                                                    f"{JOB}/out", "--steps", str(STEPS)))
        assert code == 0, out[-6000:]
        assert "pdsh" in out and "node1,node2" in out  # DeepSpeed's pdsh runner reached both nodes
        _check_loopback_only(out)
        ranks = _ranks(job / "out", 2)
        _check_trained_together(ranks, ["node1", "node2"])
        assert (job / "out" / "done").is_file()
        shards = sorted(p.name for p in (job / "out" / "checkpoint" / "final").glob("*optim_states.pt"))
        assert shards == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)], shards
        assert _saved_shapes(nodes[1], f"{JOB}/out/model/model.bin") == FULL_SHAPES
    finally:
        stop_nodes(nodes)


def test_torchrun_two_nodes_train_fsdp_and_save_one_full_state_dict(docker_client, stack_images, job):
    image = stack_images("flash-attn-fsdp", "2026.11").image_id
    nodes = start_nodes(docker_client, image, job)
    try:
        port = free_port()
        commands = [torchrun_command(nodes, i, port, "fsdp_train.py", "--out", f"{JOB}/out", "--steps", str(STEPS))
                    for i in range(len(nodes))]
        assert interfaces(nodes[0]) == ["lo"]
        results = run_on_all(nodes, commands, timeout=600)
        for node, (code, out) in zip(nodes, results):
            assert code == 0, f"{node.name}: {out[-6000:]}"
            _check_loopback_only(out)
        _check_trained_together(_ranks(job / "out", 2), ["node1", "node2"])
        assert sorted(p.name for p in (job / "out").glob("*.pt")) == ["full.pt"]
        assert _saved_shapes(nodes[1], f"{JOB}/out/full.pt") == FULL_SHAPES
    finally:
        stop_nodes(nodes)


# -- a real Slurm: slurmctld and two slurmd (node1 on 127.0.0.2, node2 on 127.0.0.3) ------------------

SLURM = SCRIPTS / "slurm"
SLURM_CONF = """ClusterName=stackbuild-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/linear
MpiDefault=none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurmctld.log
SlurmdLogFile=/var/log/slurmd-%n.log
ReturnToService=2
NodeName=node1 NodeAddr=127.0.0.2 NodeHostname={host} Port={port1} CPUs=1 State=UNKNOWN
NodeName=node2 NodeAddr=127.0.0.3 NodeHostname={host} Port={port2} CPUs=1 State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
"""


def engine_memlock_args() -> list[str]:
    """`--ulimit memlock=N:N` where the engine itself may not lock more (a dockerd started in a limited
    shell): the script's `--ulimit memlock=-1`, right on a cluster, is refused there; the later flag wins."""
    limits = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() != "dockerd":
                continue
            for line in (comm.parent / "limits").read_text().splitlines():
                if line.startswith("Max locked memory"):
                    hard = line.split()[4]
                    if hard != "unlimited":
                        limits.append(int(hard))
        except (OSError, ValueError, IndexError):
            continue
    return ["--ulimit", f"memlock={min(limits)}:{min(limits)}"] if limits else []


@pytest.fixture(scope="session")
def slurm_image(docker_client, settings):
    """Debian's slurm-wlm and munge in an image of its own (test-labelled, removed at session end)."""
    tag = f"stackbuild-test-slurm:{uuid.uuid4().hex[:10]}"
    docker_client.images.build(path=str(SLURM), tag=tag, network_mode="host", rm=True, forcerm=True,
                               labels={TEST_LABEL: "slurm"})
    yield tag
    docker_client.images.remove(tag, force=True)


def test_slurm_runs_the_generated_batch_script_across_two_nodes(docker_client, stack_images, slurm_image, job,
                                                                 tmp_path):
    """`stackbuild launch slurm --container docker` writes the script; a real Slurm (controller and two
    node daemons) runs it: srun starts one task per node, each runs the image with the host's engine,
    and torchrun on both nodes meets at the address Slurm gives node1. The cluster's container is the
    network namespace (loopback only) the daemons and every job container share."""
    image = stack_images("flash-attn-fsdp", "2026.11")
    conf = tmp_path / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=SANDBOX_HOST, ctld_port=free_port("127.0.0.1"), port1=free_port(),
                                      port2=free_port("127.0.0.3")))
    docker_cli = shutil.which("docker")
    assert docker_cli, "the Docker CLI is needed on the host (the Slurm nodes use it)"
    cluster = start_sandbox(
        docker_client, slurm_image, labels={TEST_LABEL: "slurm"}, cap_add=["NET_ADMIN"],  # start.sh: ip addr
        volumes={str(conf): {"bind": "/etc/slurm/slurm.conf", "mode": "ro"},
                 str(SLURM / "start.sh"): {"bind": "/start.sh", "mode": "ro"},
                 str(job): {"bind": str(job), "mode": "rw"}, **name_files(job),
                 docker_cli: {"bind": "/usr/local/bin/docker", "mode": "ro"},
                 "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}})
    try:
        folder = job / "sbatch"
        engine_args = ["--label", f"{TEST_LABEL}=slurm-job", "--label", f"{RUN_LABEL}={RUN_ID}",
                       f"--network=container:{cluster.id}", *name_args(job),
                       "-e", "OMP_NUM_THREADS=1", "-e", "TORCH_CPP_LOG_LEVEL=INFO", *engine_memlock_args()]
        result = CliRunner().invoke(app, [
            "launch", "slurm", "flash-attn-fsdp", "-t", "cpu", "--container", "docker", "--interface", "lo",
            "--image", image.ref.immutable, "--port", str(free_port()), "-o", str(folder),
            *[f"--engine-arg={arg}" for arg in engine_args],
            "--", f"{job}/fsdp_train.py", "--out", f"{job}/out", "--steps", str(STEPS)])
        assert result.exit_code == 0, result.output
        code, out = cluster.exec_run(["sh", "/start.sh"])
        assert code == 0, out.decode(errors="replace")
        assert b"node[1-2]" in out and b"idle" in out
        code, out = cluster.exec_run(["ls", "/sys/class/net"])
        assert out.split() == [b"lo"]  # the daemons' and the jobs' namespace: loopback only
        code, out = cluster.exec_run(["ip", "-4", "-o", "addr"])
        assert sorted(line.split()[3] for line in out.decode().splitlines()) == [
            "127.0.0.1/8", "127.0.0.2/32", "127.0.0.3/32"], out
        code, out = cluster.exec_run(["sbatch", "--wait", f"{folder}/flash-attn-fsdp.sbatch"], workdir=str(job))
        logs = "\n".join(p.read_text(errors="replace") for p in job.glob("flash-attn-fsdp-*.out"))
        assert code == 0, out.decode(errors="replace") + logs
        _check_trained_together(_ranks(job / "out", 2), ["node1", "node2"])
        assert _saved_shapes_with(docker_client, image.image_id, job, f"{job}/out/full.pt") == FULL_SHAPES
        _check_loopback_only(logs)
        code, daemons = cluster.exec_run(["sh", "-c", "cat /var/log/slurmctld.log /var/log/slurmd-node*.log"])
        assert non_loopback(daemons.decode(errors="replace"), NAMES) == []
    finally:  # the job's containers (each --rm, in the cluster's namespace) first, then the cluster
        for leftover in docker_client.containers.list(all=True, filters={"label": [f"{TEST_LABEL}=slurm-job",
                                                                                   f"{RUN_LABEL}={RUN_ID}"]}):
            remove_container(leftover)
        remove_container(cluster)


def _saved_shapes_with(client, image: str, job: Path, path: str) -> dict:
    out = client.containers.run(image, ["python", "-c", LOAD_SAVED, path], remove=True, network_mode="none",
                                labels={TEST_LABEL: "multinode"}, volumes={str(job): {"bind": str(job), "mode": "ro"}})
    return json.loads(out.decode().strip().splitlines()[-1])


def test_the_session_sweep_spares_another_runs_containers(docker_client):
    """A test session's end-of-session sweep removes its own run's containers only: sweeping every
    test-labelled container is what killed a two-node run of another session mid-training (its log
    just stopped, no error). This run's containers get its id from the fixtures' client."""
    base = "debian:bookworm-slim"
    other = uuid.uuid4().hex[:12]
    mine = docker_client.containers.run(base, ["sleep", "300"], detach=True, network_mode="none",
                                        labels={TEST_LABEL: "sweep"})
    theirs = docker_client.containers.run(base, ["sleep", "300"], detach=True, network_mode="none",
                                          labels={TEST_LABEL: "sweep", RUN_LABEL: other})
    try:
        assert mine.labels[RUN_LABEL] == RUN_ID
        assert sweep(docker_client, other) == [theirs.name]  # as the other run's session end would
        theirs_gone = not docker_client.containers.list(all=True, filters={"id": theirs.id})
        mine.reload()
        assert theirs_gone and mine.status == "running"
    finally:
        remove_container(mine)
        remove_container(theirs)
