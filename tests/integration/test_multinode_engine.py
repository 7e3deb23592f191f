"""Two containers train together, as two nodes of a cluster would (issue 22).

- deepspeed-zero3-offload@2026.11 (cpu): DeepSpeed's own launcher on node1 reads a hostfile and
  starts one rank on each node over pdsh and ssh (stackbuild-sshd in each container, host keys
  made at start, the job's key pair); ZeRO-3 partitions a tiny model across them (gloo).
- flash-attn-fsdp@2026.11 (cpu): `torchrun --nnodes 2` on each node meets through c10d
  rendezvous on node1's address; FSDP trains and rank 0 saves one full state dict.
Both are checked on what they wrote: the same steps on both ranks, the loss averaged over the
ranks equal on both and falling, each rank holding part of the model, and the saved files.
Nodes are containers on the host network bound to 127.0.0.2 and 127.0.0.3 (tests/integration/nodes.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import FIXTURES
from .nodes import (JOB, deepspeed_command, free_port, make_job, run_on_all, start_nodes, stop_nodes,
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
        write_hostfile(job, nodes)
        code, out = nodes[0].exec(deepspeed_command(nodes, free_port(), ssh_port, "zero3_train.py", "--out",
                                                    f"{JOB}/out", "--steps", str(STEPS)))
        assert code == 0, out[-6000:]
        assert "pdsh" in out and "node1,node2" in out  # DeepSpeed's pdsh runner reached both nodes
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
        results = run_on_all(nodes, commands, timeout=600)
        for node, (code, out) in zip(nodes, results):
            assert code == 0, f"{node.name}: {out[-6000:]}"
        _check_trained_together(_ranks(job / "out", 2), ["node1", "node2"])
        assert sorted(p.name for p in (job / "out").glob("*.pt")) == ["full.pt"]
        assert _saved_shapes(nodes[1], f"{JOB}/out/full.pt") == FULL_SHAPES
    finally:
        stop_nodes(nodes)
