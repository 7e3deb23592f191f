"""Two (or more) "nodes" on one host for the multi-node tests and bench: containers of one image
on the host's network, each bound to a loopback address of its own (127.0.0.2, 127.0.0.3, …).

The engine runs without a bridge network, so the containers share the host's network namespace;
each node's sshd listens on its own address. Name lookups never leave the machine: every node
gets /etc/hosts entries for all nodes (node1 → 127.0.0.2, …) and a resolv.conf that points at
127.0.0.1, where nothing answers. gloo is bound to the loopback interface (GLOO_SOCKET_IFNAME=lo),
so no collective reaches another address.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

TEST_LABEL = "io.stackbuild.test"
JOB = "/job"  # the folder every node mounts: scripts, hostfile, key pair, outputs

# What every training process needs on these nodes (also written to the job's .deepspeed_env,
# since DeepSpeed's pdsh runner forwards only some variables to the other nodes).
NODE_ENV = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@dataclass
class Node:
    name: str  # node1, node2, … (its /etc/hosts name on every node)
    addr: str  # its loopback address
    container: object  # docker.models.containers.Container

    def exec(self, cmd: list[str], env: dict[str, str] | None = None, workdir: str = JOB) -> tuple[int, str]:
        result = self.container.exec_run(cmd, environment=env or {}, workdir=workdir, demux=False)
        return result.exit_code, (result.output or b"").decode(errors="replace")


def node_addr(index: int) -> str:
    return f"127.0.0.{index + 2}"


def free_port(addr: str = "127.0.0.2") -> int:
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


def make_job(job: Path, scripts: list[Path], count: int = 2) -> None:
    """The shared folder: the scripts, a key pair, resolv.conf, .deepspeed_env."""
    job.mkdir(parents=True, exist_ok=True)
    for script in scripts:
        (job / script.name).write_bytes(script.read_bytes())
    keys = job / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stackbuild-test-job",
                    "-f", str(keys / "id_ed25519")], check=True, timeout=60)
    (job / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (job / ".deepspeed_env").write_text("".join(f"{k}={v}\n" for k, v in NODE_ENV.items()))
    (job / "out").mkdir()
    job.chmod(0o777)
    (job / "out").chmod(0o777)


def start_nodes(client, image: str, job: Path, count: int = 2, ssh_port: int | None = None) -> list[Node]:
    """Start `count` node containers of `image` sharing `job` at /job; with `ssh_port`, each runs
    stackbuild-sshd on its own address and that port with the job's key pair. The caller removes
    them (stop_nodes)."""
    hosts = {f"node{i + 1}": node_addr(i) for i in range(count)}
    nodes: list[Node] = []
    try:
        for i in range(count):
            name = f"node{i + 1}"
            container = client.containers.run(
                image, ["sleep", "infinity"], detach=True, name=f"stackbuild-test-{name}-{uuid.uuid4().hex[:8]}",
                network_mode="host", extra_hosts=hosts, shm_size="1g", init=True,
                labels={TEST_LABEL: "multinode"}, environment={**NODE_ENV, "STACKBUILD_NODE": name},
                volumes={str(job): {"bind": JOB, "mode": "rw"},
                         str(job / "resolv.conf"): {"bind": "/etc/resolv.conf", "mode": "ro"}})
            nodes.append(Node(name, hosts[name], container))
        if ssh_port is not None:
            for node in nodes:
                code, out = node.exec(["stackbuild-sshd", "--listen", node.addr, "--port", str(ssh_port),
                                       "--keys", f"{JOB}/keys"])
                if code:
                    raise RuntimeError(f"stackbuild-sshd on {node.name} failed ({code}): {out}")
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        try:
            node.container.remove(force=True)
        except Exception:  # already gone
            pass


def run_on_all(nodes: list[Node], commands: list[list[str]], timeout: float) -> list[tuple[int, str]]:
    """Run one command on each node at once (torchrun on every node); (exit code, output) each."""
    results: list[tuple[int, str] | None] = [None] * len(nodes)

    def one(i: int) -> None:
        results[i] = nodes[i].exec(commands[i])

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return [r if r is not None else (124, f"timed out after {timeout:.0f} s") for r in results]


def deepspeed_command(nodes: list[Node], master_port: int, ssh_port: int, script: str, *args: str) -> list[str]:
    """DeepSpeed's own launcher on the first node: the hostfile's nodes over pdsh and ssh."""
    return ["deepspeed", "--hostfile", f"{JOB}/hostfile", "--launcher", "pdsh", "--ssh_port", str(ssh_port),
            "--master_addr", nodes[0].addr, "--master_port", str(master_port), f"{JOB}/{script}", *args]


def torchrun_command(nodes: list[Node], index: int, port: int, script: str, *args: str) -> list[str]:
    """torchrun on node `index`: c10d rendezvous on the first node's address, this node's own address."""
    return ["torchrun", "--nnodes", str(len(nodes)), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{nodes[0].addr}:{port}", "--rdzv-id", "stackbuild-test",
            "--rdzv-conf", f"is_host={1 if index == 0 else 0},timeout=300", "--local-addr", nodes[index].addr,
            "--max-restarts", "0", f"{JOB}/{script}", *args]


def write_hostfile(job: Path, nodes: list[Node], slots: int = 1) -> None:
    (job / "hostfile").write_text("".join(f"{node.name} slots={slots}\n" for node in nodes))
