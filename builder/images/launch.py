"""Multi-node jobs for schedulers that exist: a Slurm batch script, Kubernetes manifests, plain hosts.

stackbuild writes the job (and never schedules anything itself): for a built image and a training
command, ``write_job`` renders the files one kind of cluster needs, from a ``JobSpec``:

- ``slurm``: an sbatch script that derives the rendezvous (master address and port, node rank,
  world size) from Slurm's environment and runs torchrun or DeepSpeed's launcher on every node,
  in the image through pyxis/enroot (``srun --container-image``) or the Docker engine of each node;
- ``k8s``: a JobSet (torchrun on every pod; or DeepSpeed's launcher in a pod of its own reaching
  worker pods that run stackbuild-sshd, as Kubeflow's MPI and DeepSpeed runtimes do), and for
  torchrun a Kubeflow Trainer v2 TrainJob (its torch-distributed runtime) and a Kubeflow
  PyTorchJob; each with a headless Service (the TrainJob's runtime makes its own), /dev/shm as a
  memory volume, GPU requests and the image pinned by digest;
- ``hosts``: a DeepSpeed hostfile, the job's ssh key pair and the commands that start each node's
  container (stackbuild-sshd) and the launcher, or torchrun's rendezvous on every host.

Rendering is pure (``render_job``); ``resolve_image`` is the one step that asks an engine.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import INTERFACE, PARTITION
from ..engine.api import ImageEngine
from ..engine.references import image_ref_problem
from ..errors import ConfigError, RenderError, SelectionError, SubmitError, UsageError
from ..profile import targets
from ..render.dockerfile import BuildContext, prepare
from ..profile.spec import split_spec
from ..safety.atomic import write_folder_atomic
from ..safety.credentials import redact
from ..safety.printable import printable
from .registry import locate

KINDS = ("slurm", "k8s", "hosts")
LAUNCHERS = ("torchrun", "deepspeed")
SLURM_CONTAINERS = ("pyxis", "docker")
JOB_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?\Z")  # a DNS-1123 label short enough for pod names
HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\Z")
SSH_KEYS = "/etc/stackbuild-ssh"  # where a pod or node container finds the job's key pair
JOB_DIR = "/job"  # plain hosts: where each node's container mounts the job's folder
SHM = "16Gi"


@dataclass(frozen=True)
class JobSpec:
    """One multi-node job: what runs, where, on how many nodes."""

    kind: str
    name: str
    image: str
    command: tuple[str, ...]  # the training script and its arguments (torchrun/deepspeed run it)
    nodes: int = 2
    procs_per_node: int = 1  # GPUs per node on a GPU image; processes per node on a cpu one
    gpus: bool = True  # request GPUs (a cuda image)
    gpu_resource: str = ""  # the Kubernetes resource its GPUs are (the target's accelerator entry's k8s_resource)
    launcher: str = "torchrun"
    port: int = 29500
    ssh_port: int = 2222
    partition: str | None = None
    interface: str | None = None  # NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME
    container: str = "pyxis"  # slurm: pyxis/enroot or the Docker engine on each node
    hosts: tuple[str, ...] = ()  # plain hosts, the first one the master
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[tuple[str, str], ...] = ()  # (host path, container path)
    engine_args: tuple[str, ...] = ()  # extra `docker run` arguments (slurm with docker, hosts)
    spec: str = ""  # stack@release (target), for the files' headers


def check_spec(spec: JobSpec) -> None:
    """Every value that reaches a script or manifest, checked; UsageError/ConfigError naming it and the fix."""
    problem = image_ref_problem(spec.image)
    if problem:
        raise UsageError(f"--image '{printable(spec.image)}' {problem}")
    if spec.kind not in KINDS:
        raise UsageError(f"launch kind '{printable(spec.kind)}' is not one of {', '.join(KINDS)}")
    if spec.launcher not in LAUNCHERS:
        raise UsageError(f"--launcher '{printable(spec.launcher)}' is not one of {', '.join(LAUNCHERS)}")
    if not JOB_NAME.match(spec.name):
        raise UsageError(f"--name '{printable(spec.name)}' is not a job name: lowercase letters, digits and '-', starting "
                         "with a letter, at most 40 characters (pod and host names are made from it)")
    if not spec.command:
        raise UsageError("no training command: give it after '--', e.g. -- train.py --config ds.json")
    if not 1 <= spec.nodes <= 4096:
        raise UsageError(f"--nodes {spec.nodes} is out of range (1 to 4096)")
    if not 1 <= spec.procs_per_node <= 64:
        raise ConfigError(f"gpus per node {spec.procs_per_node} is out of range (1 to 64)")
    for flag, port in (("--port", spec.port), ("--ssh-port", spec.ssh_port)):
        if not 1 <= port <= 65535:
            raise UsageError(f"{flag} {port} is not a port number (1 to 65535)")
    if spec.partition is not None and not PARTITION.match(spec.partition):
        raise ConfigError(f"partition '{printable(spec.partition)}' is not a Slurm partition name (letters, digits, '_', '.', "
                          "'-')")
    if spec.interface is not None and not INTERFACE.match(spec.interface):
        raise ConfigError(f"network interface '{printable(spec.interface)}' is not an interface list (e.g. eth0, ib0 or "
                          "^lo,docker)")
    if spec.container not in SLURM_CONTAINERS:
        raise UsageError(f"--container '{printable(spec.container)}' is not one of {', '.join(SLURM_CONTAINERS)}")
    for host in spec.hosts:
        if not HOST_NAME.match(host):
            raise UsageError(f"--host '{printable(host)}' is not a host name or address")
    if spec.kind == "hosts" and len(spec.hosts) != spec.nodes:
        raise UsageError(f"launch hosts needs one --host per node: {len(spec.hosts)} given for --nodes "
                         f"{spec.nodes} (the first is the master)")
    if spec.kind == "k8s" and spec.gpus and not spec.gpu_resource:
        raise ConfigError("the target's accelerator names no Kubernetes resource for its GPUs (k8s_resource in "
                          "builder/profile/accelerators.py)")
    if spec.kind == "k8s" and not DIGEST.search(spec.image):
        raise SelectionError(f"{spec.image} is not pinned by digest, which a Kubernetes job needs (every pod "
                             "must run the same image): push it (`stackbuild push …`) or pass --image "
                             "REGISTRY/NAME@sha256:…")
    for key, _ in spec.env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", key):
            raise UsageError(f"--env '{printable(key)}' is not a variable name (write NAME=VALUE)")
    for text in (*spec.command, *(v for _, v in spec.env), *(p for m in spec.mounts for p in m), *spec.engine_args):
        if any(ord(c) < 32 and c != "\t" for c in text):
            raise UsageError(f"{text!r} holds a control character (a newline would end the script's line)")


def render_job(spec: JobSpec) -> dict[str, str]:
    """The job's files (relative path -> text) for its kind; pure."""
    check_spec(spec)
    if spec.kind == "slurm":
        return {f"{spec.name}.sbatch": _slurm(spec)}
    if spec.kind == "k8s":
        files = {f"{spec.name}.jobset.yaml": _yaml_documents(_jobset(spec))}
        if spec.launcher == "torchrun":
            files[f"{spec.name}.trainjob.yaml"] = _yaml_documents(_trainjob(spec))
            files[f"{spec.name}.pytorchjob.yaml"] = _yaml_documents(_pytorchjob(spec))
        return files
    return _hosts(spec)


# -- shared pieces ---------------------------------------------------------------------------

class Raw(str):
    """A shell word written as it is (a "$VARIABLE" the script expands); every other word is quoted."""


def _sh(words: list[str]) -> str:
    return " ".join(w if isinstance(w, Raw) else shlex.quote(w) for w in words)


def _header(spec: JobSpec, comment: str = "#") -> str:
    return (f"{comment} Written by `stackbuild launch {spec.kind}` for {spec.spec or spec.image}: {spec.nodes} nodes x "
            f"{spec.procs_per_node} {'GPUs' if spec.gpus else 'processes'}, {spec.launcher}.\n"
            f"{comment} The image is the same everywhere: {spec.image}\n")


def _net_env(spec: JobSpec) -> list[tuple[str, str]]:
    env = list(spec.env)
    if spec.interface:
        env += [("NCCL_SOCKET_IFNAME", spec.interface), ("GLOO_SOCKET_IFNAME", spec.interface.lstrip("^"))]
    return env


def _torchrun(spec: JobSpec, nnodes: str, node_rank: str, master_addr: str, master_port: str) -> str:
    """A torchrun line; a rendezvous value that is Raw is a variable the script expands."""
    return _sh(["torchrun", "--nnodes", nnodes, "--node-rank", node_rank, "--nproc-per-node",
                str(spec.procs_per_node), "--master-addr", master_addr, "--master-port", master_port,
                *spec.command])


def _deepspeed_no_ssh(spec: JobSpec, hostfile: str, node_rank: str, master_addr: str, master_port: str) -> str:
    """DeepSpeed's launcher on each node by itself (--no_ssh): the scheduler starts one per node."""
    return _sh(["deepspeed", "--hostfile", hostfile, "--no_ssh", "--node_rank", node_rank, "--master_addr",
                master_addr, "--master_port", master_port, *spec.command])


def _docker_run(spec: JobSpec, env_names: list[str], mounts: list[tuple[str, str]], workdir: str | None,
                detach_name: str | None = None) -> list[str]:
    """`docker run` of one node's container: host network (unless an --engine-arg names another) and IPC,
    memlock, the GPUs of a GPU image."""
    args = ["docker", "run"] + (["-d", "--name", detach_name] if detach_name else ["--rm"])
    if not any(re.match(r"--(network|net)(=|\Z)", arg) for arg in spec.engine_args):
        args += ["--network", "host"]
    args += ["--ipc", "host", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]
    if spec.gpus:
        args += ["--gpus", "all"]
    for name in env_names:
        args += ["-e", name]
    for key, value in _net_env(spec):
        args += ["-e", f"{key}={value}"]
    for src, dst in [*spec.mounts, *mounts]:
        args += ["-v", Raw(f'"{src}:{dst}"') if "$" in src else f"{src}:{dst}"]
    if workdir:
        args += ["-w", Raw(f'"{workdir}"') if "$" in workdir else workdir]
    return args + list(spec.engine_args)


# -- Slurm -----------------------------------------------------------------------------------

def _slurm(spec: JobSpec) -> str:
    lines = ["#!/bin/bash", _header(spec).rstrip("\n"),
             "# Submit with `sbatch FILE` from a folder every node sees (the hostfile and logs go there).",
             f"#SBATCH --job-name={spec.name}", f"#SBATCH --nodes={spec.nodes}", "#SBATCH --ntasks-per-node=1",
             f"#SBATCH --output={spec.name}-%j.out"]
    if spec.gpus:
        lines.append(f"#SBATCH --gpus-per-node={spec.procs_per_node}")
    if spec.partition:
        lines.append(f"#SBATCH --partition={spec.partition}")
    lines += ["set -euo pipefail", "",
              "# The rendezvous, from Slurm's environment: the allocation's first node is the master, at the",
              "# address Slurm reaches it by (NodeAddr); every task learns its node rank from SLURM_NODEID.",
              "# (sed -n 1p, not head: head exits early and pipefail turns the writer's SIGPIPE into a failure)",
              'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
              'MASTER_ADDR=$(scontrol show node "$first" | tr " " "\\n" | sed -n "s/^NodeAddr=//p" | sed -n 1p)',
              'export MASTER_ADDR=${MASTER_ADDR:-$first}',
              f"export MASTER_PORT=${{STACKBUILD_MASTER_PORT:-{spec.port}}}",
              'export NNODES=$SLURM_JOB_NUM_NODES']
    for key, value in _net_env(spec):
        lines.append(f"export {key}={shlex.quote(value)}")
    # what the container needs of Slurm's environment (_docker_run passes _net_env's values itself)
    env_names = ["MASTER_ADDR", "MASTER_PORT", "NNODES", "SLURM_NODEID", "SLURMD_NODENAME", "SLURM_JOB_ID"]
    if spec.launcher == "deepspeed":
        lines += ["# DeepSpeed's launcher on every node by itself (--no_ssh), from a hostfile of the allocation.",
                  "hostfile=$SLURM_SUBMIT_DIR/hostfile-$SLURM_JOB_ID",
                  f'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/$/ slots={spec.procs_per_node}/" '
                  '> "$hostfile"', "export STACKBUILD_HOSTFILE=$hostfile"]
        env_names.append("STACKBUILD_HOSTFILE")
        inner = _deepspeed_no_ssh(spec, Raw('"$STACKBUILD_HOSTFILE"'), Raw('"$SLURM_NODEID"'), Raw('"$MASTER_ADDR"'),
                                  Raw('"$MASTER_PORT"'))
    else:
        inner = _torchrun(spec, Raw('"$NNODES"'), Raw('"$SLURM_NODEID"'), Raw('"$MASTER_ADDR"'), Raw('"$MASTER_PORT"'))
    if spec.container == "pyxis":
        mounts = ",".join(f"{src}:{dst}" for src, dst in [*spec.mounts, ("$SLURM_SUBMIT_DIR", "$SLURM_SUBMIT_DIR")])
        lines += ["# pyxis/enroot: every node imports the same image by digest; Slurm's environment passes through.",
                  f"IMAGE={shlex.quote(pyxis_image(spec.image))}",
                  "# shellcheck disable=SC2016  # single-quoted: each node's shell expands its own SLURM_NODEID",
                  f'srun --container-image="$IMAGE" --container-mounts="{mounts}" '
                  '--container-workdir="$SLURM_SUBMIT_DIR" \\', f"  bash -c {shlex.quote(inner)}"]
    else:
        run = _docker_run(spec, env_names, [("$SLURM_SUBMIT_DIR", "$SLURM_SUBMIT_DIR")], "$SLURM_SUBMIT_DIR")
        node_cmd = _sh(["exec", *run, "--name", Raw('"stackbuild-$SLURM_JOB_ID-$SLURM_NODEID"'), Raw('"$IMAGE"'),
                        "bash", "-c", inner])
        lines += ["# The Docker engine of each node runs the image (pulled there by digest or content tag).",
                  f"export IMAGE={shlex.quote(spec.image)}",
                  "# shellcheck disable=SC2016  # single-quoted: each node's shell expands its own SLURM_NODEID",
                  f"srun bash -c {shlex.quote(node_cmd)}"]
    return "\n".join(lines) + "\n"


# -- Kubernetes ------------------------------------------------------------------------------

def _k8s_container(spec: JobSpec, name: str, command: list[str], gpus: bool) -> dict:
    container: dict = {"name": name, "image": spec.image, "command": command,
                       "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}
    env = [{"name": k, "value": v} for k, v in _net_env(spec)]
    if env:
        container["env"] = env
    if gpus and spec.gpus:
        count = str(spec.procs_per_node)
        container["resources"] = {"limits": {spec.gpu_resource: count}, "requests": {spec.gpu_resource: count}}
    return container


def _pod_spec(containers: list[dict], ssh: bool = False) -> dict:
    volumes: list[dict] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM}}]
    if ssh:
        volumes.append({"name": "ssh", "secret": {"secretName": "SECRET", "defaultMode": 0o400}})
    return {"restartPolicy": "Never", "containers": containers, "volumes": volumes}


def _headless_service(spec: JobSpec, selector: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": spec.name},
            "spec": {"clusterIP": "None", "selector": selector, "publishNotReadyAddresses": True,
                     "ports": [{"name": "rendezvous", "port": spec.port, "targetPort": spec.port},
                               {"name": "ssh", "port": spec.ssh_port, "targetPort": spec.ssh_port}]}}


def _jobset(spec: JobSpec) -> list[dict]:
    """A headless Service (JobSet's subdomain: pods are NAME-<job>-0-<index>.NAME) and the JobSet."""
    selector = {"jobset.sigs.k8s.io/jobset-name": spec.name}
    index_env = {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}
    shm = {"name": "dshm", "mountPath": "/dev/shm"}
    if spec.launcher == "torchrun":
        master = f"{spec.name}-node-0-0.{spec.name}"
        run = _torchrun(spec, str(spec.nodes), Raw('"$NODE_RANK"'), master, str(spec.port))
        container = _k8s_container(spec, "trainer", ["bash", "-c", run], True)
        container["env"] = [index_env, *container.get("env", [])]
        jobs = [_replicated("node", spec.nodes, _pod_spec([container]))]
        success = None
    else:
        workers = [f"{spec.name}-worker-0-{i}.{spec.name}" for i in range(spec.nodes)]
        keys = {"name": "ssh", "mountPath": SSH_KEYS, "readOnly": True}
        sshd = ["stackbuild-sshd", "--foreground", "--port", str(spec.ssh_port), "--keys", SSH_KEYS]
        worker = _k8s_container(spec, "worker", sshd, True)
        worker["volumeMounts"] = [shm, keys]
        hostfile = "".join(f"{host} slots={spec.procs_per_node}\\n" for host in workers)
        wait = " ".join(workers)
        run = (f"stackbuild-sshd --port {spec.ssh_port} --keys {SSH_KEYS} && printf '{hostfile}' > /tmp/hostfile && "
               f"for h in {wait}; do until ssh -p {spec.ssh_port} -o ConnectTimeout=5 \"$h\" true; do sleep 2; done; "
               f"done && deepspeed --hostfile /tmp/hostfile --launcher pdsh --ssh_port {spec.ssh_port} "
               f"--master_addr {workers[0]} --master_port {spec.port} " + shlex.join(spec.command))
        launcher = _k8s_container(spec, "launcher", ["bash", "-c", run], False)
        launcher["volumeMounts"] = [shm, keys]
        jobs = [_replicated("launcher", 1, _pod_spec([launcher], ssh=True)),
                _replicated("worker", spec.nodes, _pod_spec([worker], ssh=True))]
        for job in jobs:
            for volume in job["template"]["spec"]["template"]["spec"]["volumes"]:
                if volume["name"] == "ssh":
                    volume["secret"]["secretName"] = f"{spec.name}-ssh"
        success = {"operator": "All", "targetReplicatedJobs": ["launcher"]}
    body: dict = {"network": {"enableDNSHostnames": True, "subdomain": spec.name}, "replicatedJobs": jobs}
    if success:
        body["successPolicy"] = success
    else:
        body["failurePolicy"] = {"maxRestarts": 0}
    jobset = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": spec.name},
              "spec": body}
    return [_headless_service(spec, selector), jobset]


def _replicated(name: str, pods: int, pod: dict) -> dict:
    return {"name": name, "replicas": 1, "template": {"spec": {
        "parallelism": pods, "completions": pods, "completionMode": "Indexed", "backoffLimit": 0,
        "template": {"spec": pod}}}}


def _pytorchjob(spec: JobSpec) -> list[dict]:
    """Kubeflow's PyTorchJob (training-operator v1): a Master and Worker-s, torchrun on each; the operator
    sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE (nodes) and RANK (this node) in every pod."""
    run = _torchrun(spec, Raw('"$WORLD_SIZE"'), Raw('"$RANK"'), Raw('"$MASTER_ADDR"'), Raw('"$MASTER_PORT"'))

    def replica(count: int) -> dict:
        container = _k8s_container(spec, "pytorch", ["bash", "-c", run], True)
        container["ports"] = [{"name": "pytorchjob-port", "containerPort": spec.port}]
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": {
            "containers": [container],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM}}]}}}

    replicas = {"Master": replica(1)}
    if spec.nodes > 1:
        replicas["Worker"] = replica(spec.nodes - 1)
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": spec.name},
           "spec": {"runPolicy": {"backoffLimit": 0}, "pytorchReplicaSpecs": replicas}}
    selector = {"training.kubeflow.org/job-name": spec.name}
    return [_headless_service(spec, selector), job]


TRAINER_RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer v2 installs for torchrun


def _trainjob(spec: JobSpec) -> list[dict]:
    """Kubeflow Trainer v2's TrainJob (trainer.kubeflow.org/v1alpha1) on its torch-distributed runtime,
    which makes the JobSet and its headless Service and gives torchrun its rendezvous in PET_NNODES,
    PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT (torchrun reads them);
    /dev/shm comes in through a runtime patch of the runtime's `node` job and container."""
    trainer: dict = {"image": spec.image, "command": ["torchrun", *spec.command], "numNodes": spec.nodes,
                     "numProcPerNode": spec.procs_per_node}
    env = [{"name": k, "value": v} for k, v in _net_env(spec)]
    if env:
        trainer["env"] = env
    if spec.gpus:
        count = str(spec.procs_per_node)
        trainer["resourcesPerNode"] = {"limits": {spec.gpu_resource: count}, "requests": {spec.gpu_resource: count}}
    pod = {"volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM}}],
           "containers": [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]}
    patch = {"manager": "stackbuild", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": "node", "template": {"spec": {"template": {"spec": pod}}}}]}}}}
    job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": spec.name},
           "spec": {"runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                   "name": TRAINER_RUNTIME},
                    "trainer": trainer, "runtimePatches": [patch]}}
    return [job]


class _PlainDumper(yaml.SafeDumper):
    """No anchors and aliases: every object written out where it is used."""

    def ignore_aliases(self, data) -> bool:
        return True


def _yaml_documents(docs: list[dict]) -> str:
    return "".join("---\n" + yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False, width=1000) for doc in docs)


def pyxis_image(image: str) -> str:
    """An image reference as pyxis/enroot writes it: the registry host, if any, ends with '#'."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return image


# -- plain hosts -----------------------------------------------------------------------------

def _hosts(spec: JobSpec) -> dict[str, str]:
    """Plain hosts with an engine each: start-node.sh on every host, launch.sh (DeepSpeed) on the first."""
    name = f"stackbuild-{spec.name}"
    master = spec.hosts[0]
    mounts = [("$JOB", JOB_DIR)]
    head = ["#!/bin/sh", _header(spec).rstrip("\n")]
    if spec.launcher == "deepspeed":
        start = _docker_run(spec, [], mounts, JOB_DIR, detach_name=name)
        sshd = ["stackbuild-sshd", "--foreground", "--port", str(spec.ssh_port), "--keys", f"{JOB_DIR}/keys"]
        launch = ["docker", "exec", "-w", JOB_DIR, name, "deepspeed", "--hostfile", f"{JOB_DIR}/hostfile",
                  "--launcher", "pdsh", "--ssh_port", str(spec.ssh_port), "--master_addr", master,
                  "--master_port", str(spec.port), *spec.command]
        return {
            "hostfile": "".join(f"{host} slots={spec.procs_per_node}\n" for host in spec.hosts),
            "start-node.sh": "\n".join([
                *head, "# Run on every host (this folder at the same path on each, or copied there): starts this",
                f"# host's container, whose sshd listens on port {spec.ssh_port} for the job's key pair (keys/).",
                "set -eu", 'JOB=$(cd "$(dirname "$0")" && pwd)', _sh([*start, spec.image, *sshd]), ""]),
            "launch.sh": "\n".join([
                *head, f"# Run on {master} once start-node.sh runs on every host: DeepSpeed's launcher reaches",
                "# them over pdsh and ssh, from the hostfile.", "set -eu", _sh(launch), ""]),
        }
    run = _docker_run(spec, [], mounts, JOB_DIR)
    train = _torchrun(spec, str(spec.nodes), Raw('"$NODE_RANK"'), master, str(spec.port))
    return {"start-node.sh": "\n".join([
        *head, f"# Run on every host with its node rank (0 on {master}, the master, then 1, 2, ...):",
        "#   sh start-node.sh NODE_RANK", "set -eu",
        'case ${1:-} in ""|*[!0-9]*) echo "usage: sh start-node.sh NODE_RANK" >&2; exit 2;; esac',
        'JOB=$(cd "$(dirname "$0")" && pwd)',
        _sh([*run, "-e", Raw('NODE_RANK="$1"'), spec.image, "bash", "-c", train]), ""])}


# -- keys, images, writing -------------------------------------------------------------------

def make_key_pair(folder: Path, comment: str) -> dict[str, bytes]:
    """An ed25519 key pair for the job's nodes (ssh-keygen), as files for keys/."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise ConfigError("ssh-keygen is not installed here, and the job's nodes need a key pair: install "
                          "openssh-client, or run launch where it is")
    with tempfile.TemporaryDirectory(dir=folder if folder.is_dir() else None) as tmp:
        key = Path(tmp) / "id_ed25519"
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)], check=True,
                       timeout=60, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return {"keys/id_ed25519": key.read_bytes(), "keys/id_ed25519.pub": (key.parent / "id_ed25519.pub").read_bytes()}


def resolve_image(engine: ImageEngine, context: BuildContext, registry: str | None, need_digest: bool) -> str:
    """The reference every node runs: the registry digest of this plan's content tag where the engine or
    the registry knows one, else (when a digest is not needed) the content tag itself."""
    plan = context.plan
    located = locate(engine, context, registry, base="known")
    ref = located.ref
    repository = ref.immutable.rsplit(":", 1)[0]
    if located.local is not None:
        info = engine.image(located.local[1]) or {}
        for digest in info.get("RepoDigests") or []:
            if digest.startswith(repository + "@"):
                return digest
    remote = engine.remote_digest(ref.immutable) if registry else None
    if remote:
        return f"{repository}@{remote}"
    if need_digest:
        where = (f"push it: `stackbuild push {plan.spec} --target {plan.target.name} --registry REGISTRY`"
                 if registry else "set a registry (--registry or the registry setting) and push it there")
        raise SelectionError(f"{ref.immutable} has no registry digest, and every node of this job pulls the image by "
                             f"digest: {where}, or pass --image REGISTRY/NAME@sha256:…")
    if located.local is None:
        raise SelectionError(f"{plan.label} is not built here as {ref.immutable}: run `stackbuild build {plan.spec} "
                             f"--target {plan.target.name}` first, then push it where every node can pull it")
    return ref.immutable


def gpus_of(context: BuildContext) -> bool:
    """Whether the plan's target has an accelerator (its nodes request GPUs)."""
    return targets.target(context.plan.target.name).gpu


def gpu_resource_of(context: BuildContext) -> str:
    """The Kubernetes resource the plan's GPUs are requested as: its accelerator entry's, '' for none."""
    entry = targets.target(context.plan.target.name).accelerator_entry
    return entry.k8s_resource if entry is not None else ""


def write_job(files: dict[str, str], folder: Path, keys: bool) -> list[str]:
    """Write the job's files into a new or empty folder, all or nothing; the paths written."""
    try:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise RenderError(f"{printable(str(folder))} is not a new or empty folder: give launch -o a new folder")
    except OSError as exc:
        raise RenderError(f"{printable(str(folder))} cannot be read ({exc.strerror})") from None
    content = {path: text.encode() for path, text in files.items()}
    if keys:
        content.update(make_key_pair(folder.parent if folder.parent.is_dir() else Path("."), "stackbuild-launch"))

    def fill(staging: Path) -> None:
        for path, data in content.items():
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o600 if path == "keys/id_ed25519" else 0o755 if path.endswith((".sh", ".sbatch")) else 0o644)

    write_folder_atomic(folder, fill, RenderError)
    return sorted(content)


@dataclass(frozen=True)
class LaunchRequest:
    """What `stackbuild launch` was asked for, before an image is resolved."""

    kind: str
    stack: str  # STACK[@RELEASE] or a profile path
    target: str | None
    options: tuple[str, ...]
    command: tuple[str, ...]
    folder: Path | None
    name: str | None = None
    image: str | None = None  # an explicit reference (skips the engine)
    nodes: int = 2
    launcher: str = "torchrun"
    container: str = "pyxis"
    hosts: tuple[str, ...] = ()
    port: int = 29500
    ssh_port: int = 2222
    env: tuple[str, ...] = ()  # NAME=VALUE
    volumes: tuple[str, ...] = ()  # SRC:DST
    engine_args: tuple[str, ...] = ()
    submit: bool = False  # hand the job to the scheduler once written (sbatch, kubectl apply)


@dataclass(frozen=True)
class WrittenJob:
    spec: JobSpec
    folder: Path
    files: list[str]

    def next_steps(self) -> list[str]:
        """What to run next, in the order a user runs it."""
        name, folder = self.spec.name, self.folder
        if self.spec.kind == "slurm":
            return [f"sbatch {folder}/{name}.sbatch   (from a folder every node sees)"]
        if self.spec.kind == "k8s":
            steps = []
            if self.spec.launcher == "deepspeed":
                steps.append(f"kubectl create secret generic {name}-ssh --from-file={folder}/keys")
            steps.append(f"kubectl apply -f {folder}/{name}.jobset.yaml   (JobSet controller)")
            if self.spec.launcher == "torchrun":
                steps.append(f"or: kubectl apply -f {folder}/{name}.trainjob.yaml   (Kubeflow Trainer v2, its "
                             f"{TRAINER_RUNTIME} runtime)")
                steps.append(f"or: kubectl apply -f {folder}/{name}.pytorchjob.yaml   (Kubeflow training-operator v1)")
            return steps
        if self.spec.launcher == "deepspeed":
            return [f"copy {folder} to every host, then on each: sh start-node.sh",
                    f"on {self.spec.hosts[0]}: sh launch.sh"]
        return [f"copy {folder} to every host, then on host N (0 = {self.spec.hosts[0]}): sh start-node.sh N"]


def _pairs(values: tuple[str, ...], sep: str, flag: str, example: str) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        left, found, right = value.partition(sep)
        if not found or not left or not right:
            raise UsageError(f"{flag} '{printable(value)}' is not {example}")
        out.append((left, right))
    return tuple(out)


def submit_commands(written: WrittenJob) -> list[list[str]]:
    """What `--submit` runs, in order: sbatch for Slurm; for Kubernetes the key pair's secret (DeepSpeed's
    launcher) and `kubectl apply` of the JobSet. Plain hosts have no scheduler."""
    spec, folder = written.spec, written.folder
    if spec.kind == "slurm":
        return [["sbatch", str(folder / f"{spec.name}.sbatch")]]
    if spec.kind == "k8s":
        commands = []
        if spec.launcher == "deepspeed":
            commands.append(["kubectl", "create", "secret", "generic", f"{spec.name}-ssh",
                             f"--from-file={folder / 'keys'}"])
        return commands + [["kubectl", "apply", "-f", str(folder / f"{spec.name}.jobset.yaml")]]
    raise UsageError("launch hosts --submit: plain hosts have no scheduler to hand the job to; run start-node.sh "
                     "on every host (the files are written)")


def submit_job(written: WrittenJob, run=subprocess.run) -> list[str]:
    """Run ``submit_commands``; the scheduler's answers (e.g. 'Submitted batch job 42'), one line each."""
    answers = []
    for command in submit_commands(written):
        if shutil.which(command[0]) is None:
            raise SubmitError(f"{command[0]} is not installed here, so the job in {printable(str(written.folder))} "
                              f"was written but not submitted: run `{printable(shlex.join(command))}` where "
                              f"{command[0]} is (a login node, a machine with the cluster's kubeconfig), or leave out "
                              "--submit")
        try:
            done = run(command, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SubmitError(f"`{printable(shlex.join(command))}` did not answer within 300 s; the job's files are "
                              f"in {printable(str(written.folder))}") from None
        lines = [redact(line) for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        if done.returncode != 0:
            said = " | ".join(lines[-3:]) or "no output"
            raise SubmitError(f"`{printable(shlex.join(command))}` failed (exit {done.returncode}): {printable(said)}; "
                              f"the job's files are in {printable(str(written.folder))}")
        answers += lines
    return answers


def launch_job(request: LaunchRequest, settings, connect) -> WrittenJob:
    """Resolve the image (``connect()`` gives an engine when one is needed), render the job, write it."""
    if request.kind not in KINDS:
        raise UsageError(f"launch kind '{printable(request.kind)}' is not one of {', '.join(KINDS)}")
    if request.submit and request.kind == "hosts":
        raise UsageError("launch hosts --submit: plain hosts have no scheduler to hand the job to; leave out "
                         "--submit and run start-node.sh on every host")
    name, release = split_spec(request.stack)
    context = prepare(name, release, request.target, list(request.options))
    gpus = gpus_of(context)
    need_digest = request.kind == "k8s" or (request.kind == "slurm" and request.container == "pyxis")
    if request.image:
        image = request.image
    else:
        engine = connect()
        try:
            image = resolve_image(engine, context, settings.registry, need_digest)
        finally:
            engine.close()
    spec = JobSpec(
        kind=request.kind, name=request.name or context.plan.stack.name, image=image, command=request.command,
        nodes=request.nodes, procs_per_node=settings.gpus_per_node or (8 if gpus else 1), gpus=gpus,
        gpu_resource=gpu_resource_of(context),
        launcher=request.launcher, port=request.port, ssh_port=request.ssh_port, partition=settings.partition,
        interface=settings.network_interface, container=request.container, hosts=request.hosts,
        env=_pairs(request.env, "=", "--env", "NAME=VALUE"),
        mounts=_pairs(request.volumes, ":", "--volume", "SRC:DST"), engine_args=request.engine_args,
        spec=context.plan.label)
    files = render_job(spec)
    folder = request.folder or Path(f"{spec.name}-{spec.kind}")
    keys = request.launcher == "deepspeed" and request.kind in ("k8s", "hosts")
    return WrittenJob(spec, folder, write_job(files, folder, keys))
