"""Two (or more) "nodes" on one host for the multi-node tests and bench: containers of one image in
a network namespace the test makes, each node on a loopback address of its own (127.0.0.2, 127.0.0.3, …).

The namespace is a sandbox container's (`--network none`: it has `lo` and nothing else); every node
joins it (`--network container:SANDBOX`), so no packet can reach another interface of the machine,
whatever a library picks. Each node's sshd listens on its own address. Names never leave the
machine: every node mounts the job's hosts file (localhost and the sandbox's hostname on 127.0.0.1,
node1 → 127.0.0.2, …) and an nsswitch.conf that looks hosts up in files only, so no lookup asks DNS.
That also keeps torch's c10d logs truthful: when a reverse lookup fails (EAI_AGAIN from a resolver
that does not answer), torch 2.10's formatSockAddr falls back to formatting the bytes around the
sockaddr pointer, and every later address it logs is garbage that looks like IPv6 (fdff:…).
gloo is bound to the loopback interface (GLOO_SOCKET_IFNAME=lo). c10d logs every store connection
and request with both ends' addresses (TORCH_CPP_LOG_LEVEL=INFO), and ``non_loopback`` checks them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

TEST_LABEL = "io.stackbuild.test"
JOB = "/job"  # the folder every node mounts: scripts, hostfile, key pair, outputs
SANDBOX_HOST = "stackbuild-sandbox"  # the namespace's hostname (127.0.0.1 in the hosts file)

# What every training process needs on these nodes (also written to the job's .deepspeed_env,
# since DeepSpeed's pdsh runner forwards only some variables to the other nodes).
NODE_ENV = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "TORCH_CPP_LOG_LEVEL": "INFO"}
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\n" \
           "services: files\n"


@dataclass
class Node:
    name: str  # node1, node2, … (its /etc/hosts name on every node)
    addr: str  # its loopback address
    container: object  # docker.models.containers.Container
    sandbox: object = field(default=None, repr=False)  # the container whose network namespace it joined

    def exec(self, cmd: list[str], env: dict[str, str] | None = None, workdir: str = JOB) -> tuple[int, str]:
        result = self.container.exec_run(cmd, environment=env or {}, workdir=workdir, demux=False)
        return result.exit_code, (result.output or b"").decode(errors="replace")


def node_addr(index: int) -> str:
    return f"127.0.0.{index + 2}"


def free_port(addr: str = "127.0.0.2") -> int:
    """A port free on this host's loopback (a node's namespace is new, so any port is free there; the
    Slurm test's daemons also take ports from here, and they must differ)."""
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


def hosts_file(count: int = 2, sandbox_host: str = SANDBOX_HOST) -> str:
    return "".join([f"127.0.0.1 localhost {sandbox_host}\n",
                    *(f"{node_addr(i)} node{i + 1}\n" for i in range(count))])


def name_files(job: Path) -> dict[str, dict]:
    """The job's hosts, nsswitch.conf and resolv.conf as docker-py volume entries."""
    return {str(job / "hosts"): {"bind": "/etc/hosts", "mode": "ro"},
            str(job / "nsswitch.conf"): {"bind": "/etc/nsswitch.conf", "mode": "ro"},
            str(job / "resolv.conf"): {"bind": "/etc/resolv.conf", "mode": "ro"}}


def name_args(job: Path) -> list[str]:
    """The same three files as `docker run` arguments."""
    return [arg for src, dst in name_files(job).items() for arg in ("-v", f"{src}:{dst['bind']}:ro")]


def make_job(job: Path, scripts: list[Path], count: int = 2, sandbox_host: str = SANDBOX_HOST) -> None:
    """The shared folder: the scripts, a key pair, the name files, .deepspeed_env."""
    job.mkdir(parents=True, exist_ok=True)
    for script in scripts:
        (job / script.name).write_bytes(script.read_bytes())
    keys = job / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stackbuild-test-job",
                    "-f", str(keys / "id_ed25519")], check=True, timeout=60)
    (job / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (job / "hosts").write_text(hosts_file(count, sandbox_host))
    (job / "nsswitch.conf").write_text(NSSWITCH)
    (job / ".deepspeed_env").write_text("".join(f"{k}={v}\n" for k, v in NODE_ENV.items()))
    (job / "out").mkdir()
    job.chmod(0o777)
    (job / "out").chmod(0o777)


def start_sandbox(client, image: str, hostname: str = SANDBOX_HOST, **kwargs):
    """A container whose network namespace (`--network none`: loopback only) the nodes join."""
    kwargs.setdefault("labels", {TEST_LABEL: "multinode"})
    return client.containers.run(image, ["sleep", "infinity"], detach=True, network_mode="none", hostname=hostname,
                                 init=True, name=f"stackbuild-test-sandbox-{uuid.uuid4().hex[:8]}", **kwargs)


def start_nodes(client, image: str, job: Path, count: int = 2, ssh_port: int | None = None) -> list[Node]:
    """Start `count` node containers of `image` sharing `job` at /job, in the network namespace of a
    sandbox container made here; with `ssh_port`, each runs stackbuild-sshd on its own address and
    that port with the job's key pair. The caller removes them (stop_nodes)."""
    nodes: list[Node] = []
    sandbox = start_sandbox(client, image)
    try:
        for i in range(count):
            name = f"node{i + 1}"
            container = client.containers.run(
                image, ["sleep", "infinity"], detach=True, name=f"stackbuild-test-{name}-{uuid.uuid4().hex[:8]}",
                network_mode=f"container:{sandbox.id}", shm_size="1g", init=True,
                labels={TEST_LABEL: "multinode"}, environment={**NODE_ENV, "STACKBUILD_NODE": name},
                volumes={str(job): {"bind": JOB, "mode": "rw"}, **name_files(job)})
            nodes.append(Node(name, node_addr(i), container, sandbox))
        if ssh_port is not None:
            for node in nodes:
                code, out = node.exec(["stackbuild-sshd", "--listen", node.addr, "--port", str(ssh_port),
                                       "--keys", f"{JOB}/keys"])
                if code:
                    raise RuntimeError(f"stackbuild-sshd on {node.name} failed ({code}): {out}")
    except BaseException:
        stop_nodes(nodes)
        remove_container(sandbox)
        raise
    return nodes


def remove_container(container) -> None:
    try:
        container.remove(force=True)
    except Exception:  # already gone
        pass


def stop_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        remove_container(node.container)
    for sandbox in {id(n.sandbox): n.sandbox for n in nodes if n.sandbox is not None}.values():
        remove_container(sandbox)


def interfaces(node: Node) -> list[str]:
    """The network interfaces the node sees (the sandbox's: `lo` alone)."""
    code, out = node.exec(["ls", "/sys/class/net"], workdir="/")
    assert code == 0, out
    return sorted(out.split())


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


# -- which addresses the logs name ------------------------------------------------------------------

IPV4 = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")
ENDPOINT = re.compile(r"\[([^\]\s]+)\]:\d+")  # c10d writes an endpoint as [host]:port
UNRESOLVED = "The hostname of the client socket cannot be retrieved"


def non_loopback(text: str, names: set[str]) -> list[str]:
    """Every address or host name the logs name that is not on loopback (127.0.0.0/8, ::1, and their
    IPv4-mapped forms), as 'line: address'. An endpoint's host name must be one of `names` (the hosts
    file's, all on 127.0.0.x). The unspecified address (0.0.0.0, ::) is accepted only where a socket
    listens. c10d's 'hostname … cannot be retrieved' is itself a finding: after it torch logs garbage for
    every address (formatSockAddr's fallback), so nothing it logs could prove anything."""
    found = []
    for line in text.splitlines():
        where = line.strip()[:240]
        if UNRESOLVED in line:
            found.append(f"{where}: the addresses logged after this are unreadable")
            continue
        for value in IPV4.findall(line) + ENDPOINT.findall(line):
            if value in names:
                continue
            try:
                address = ipaddress.ip_address(value.split("%")[0])
            except ValueError:
                found.append(f"{where}: {value} (not an address, and not a name of the hosts file)")
                continue
            address = getattr(address, "ipv4_mapped", None) or address
            if address.is_loopback or (address.is_unspecified and "listen" in line):
                continue
            found.append(f"{where}: {value}")
    return found
