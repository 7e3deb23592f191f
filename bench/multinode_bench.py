"""Multi-node benchmark: time from launch to the first finished training step, two containers.

    python bench/multinode_bench.py [--runs 1] [--steps 4] [--only deepspeed|torchrun]
                                    [--deepspeed-image REF] [--torchrun-image REF]

Two "nodes" are two containers of one image in a network namespace made for the run (loopback
only), each on its own loopback address (127.0.0.2, 127.0.0.3), exactly as
tests/integration/test_multinode_engine.py starts them (tests/integration/nodes.py). For each way
of launching, it prints per run:

- deepspeed: deepspeed-zero3-offload@2026.11 (cpu); the containers and their stackbuild-sshd are
  started first (not timed), then `deepspeed --hostfile … --launcher pdsh` in node1 is the launch;
- torchrun: flash-attn-fsdp@2026.11 (cpu); `torchrun --nnodes 2` on both nodes at once is the launch;

the seconds from the launch to the first step both ranks finished (the later of the two ranks'
first step, from their step logs), to the last step, and the launcher's whole run; plus the
containers' start (and sshd's) before it, and the rank-averaged loss of the first and last step. The images are this checkout's plans (built here with
`stackbuild build STACK@2026.11 --target cpu`) unless --*-image names another. The host may be
shared: the load average is printed before and after. Everything it starts is labelled
io.stackbuild.test and removed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from builder.engine.connect import connect  # noqa: E402
from builder.config import load_settings  # noqa: E402
from builder.images.lookup import image_of  # noqa: E402
from tests.integration.nodes import (JOB, deepspeed_command, free_port, make_job, run_on_all,  # noqa: E402
                                     start_nodes, stop_nodes, torchrun_command, write_hostfile)

SCRIPTS = ROOT / "tests" / "integration" / "fixtures" / "multinode"
PLANS = {"deepspeed": "deepspeed-zero3-offload@2026.11", "torchrun": "flash-attn-fsdp@2026.11"}


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def first_and_last_step(out: Path) -> tuple[float, float, str]:
    """(the time both ranks had finished their first step, and their last; the rank-averaged loss of
    the first and last step), from the ranks' step logs."""
    firsts, lasts = [], []
    for rank in (0, 1):
        records = [json.loads(line) for line in (out / f"rank{rank}.jsonl").read_text().splitlines()]
        firsts.append(records[0]["time"])
        lasts.append(records[-1]["time"])
    loss = f"{records[0]['mean_loss']:.3f} -> {records[-1]['mean_loss']:.3f} ({len(records)} steps)"
    return max(firsts), max(lasts), loss


def one_run(client, kind: str, image: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="stackbuild-bench-multinode-") as tmp:
        job = Path(tmp) / "job"
        make_job(job, [SCRIPTS / "zero3_train.py", SCRIPTS / "fsdp_train.py"])
        started = time.time()
        ssh_port = free_port() if kind == "deepspeed" else None
        nodes = start_nodes(client, image, job, ssh_port=ssh_port)
        ready = time.time()
        try:
            args = ("--out", f"{JOB}/out", "--steps", str(steps))
            launched = time.time()
            if kind == "deepspeed":
                write_hostfile(job, nodes)
                launched = time.time()
                code, output = nodes[0].exec(deepspeed_command(nodes, free_port(), ssh_port, "zero3_train.py", *args))
                results = [(code, output)]
            else:
                port = free_port()
                results = run_on_all(nodes, [torchrun_command(nodes, i, port, "fsdp_train.py", *args)
                                             for i in range(len(nodes))], timeout=900)
            ended = time.time()
            failed = [out for code, out in results if code != 0]
            if failed:
                return {"error": failed[0][-2000:]}
            first, last, loss = first_and_last_step(job / "out")
            return {"containers": ready - started, "first_step": first - launched, "last_step": last - launched,
                    "whole_run": ended - launched, "loss": loss}
        finally:
            stop_nodes(nodes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--only", choices=sorted(PLANS), action="append")
    parser.add_argument("--deepspeed-image")
    parser.add_argument("--torchrun-image")
    args = parser.parse_args()
    kinds = args.only or ["deepspeed", "torchrun"]
    client = docker.from_env(version="auto", timeout=900)
    engine = connect()
    registry = load_settings().registry
    images = {}
    for kind in kinds:
        explicit = getattr(args, f"{kind}_image")
        images[kind] = explicit or image_of(engine, PLANS[kind], "cpu", [], registry)
    print(f"load average before: {load()}")
    print(f"{'launch':<10} {'run':>3} {'containers s':>13} {'first step s':>13} {'last step s':>12} "
          f"{'whole run s':>12}  loss (rank mean)                image")
    failures = 0
    for kind in kinds:
        for run in range(1, args.runs + 1):
            result = one_run(client, kind, images[kind], args.steps)
            if "error" in result:
                failures += 1
                print(f"{kind:<10} {run:>3} failed: {result['error']}")
                continue
            print(f"{kind:<10} {run:>3} {result['containers']:>13.1f} {result['first_step']:>13.1f} "
                  f"{result['last_step']:>12.1f} {result['whole_run']:>12.1f}  {result['loss']:<30}  {images[kind]}")
    print(f"load average after: {load()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
