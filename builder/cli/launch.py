"""`stackbuild launch`: write a multi-node job (Slurm, Kubernetes, plain hosts) for a built image.
Registered on the main app by builder/cli/commands.py; thin, like it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import load_settings
from ..engine import connect as engines
from ..errors import UsageError
from ..images.launch import KINDS, LaunchRequest, launch_job, submit_job
from ..profile import targets
from ..safety.printable import printable
from .output import out

launch_app = typer.Typer()

TargetOpt = Annotated[Optional[str], typer.Option("--target", "-t", help=targets.help_text())]
WithOpt = Annotated[Optional[list[str]], typer.Option("--with", help="Enable a release option (repeatable).")]
StackSpecArg = Annotated[str, typer.Argument(metavar="STACK[@RELEASE]", help="A stack, stack@release, or a profile "
                                             "path.")]
RegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="Registry of the image's name "
                                                    "(default: the registry setting).")]


def _settings(ctx: typer.Context, **overrides):
    return load_settings(ctx.obj["config"], overrides or None)


@launch_app.command("launch")
def launch_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="slurm|k8s|hosts", help="Where the job runs: a Slurm batch script, "
                                        "Kubernetes manifests (JobSet, PyTorchJob), or plain hosts with an engine.")],
    spec: StackSpecArg,
    command: Annotated[Optional[list[str]], typer.Argument(metavar="-- COMMAND...", help="The training script and "
                                                           "its arguments (torchrun or deepspeed runs it).")] = None,
    target: TargetOpt = None,
    options: WithOpt = None,
    nodes: Annotated[int, typer.Option("--nodes", "-N", help="How many nodes.")] = 2,
    gpus_per_node: Annotated[Optional[str], typer.Option("--gpus-per-node", help="GPUs (processes) per node "
                                                         "(default: the gpus_per_node setting, else 8 on a GPU "
                                                         "image, 1 on cpu).")] = None,
    launcher: Annotated[str, typer.Option("--launcher", help="torchrun or deepspeed (its own launcher).")] = "torchrun",
    partition: Annotated[Optional[str], typer.Option("--partition", help="Slurm partition (default: the partition "
                                                     "setting).")] = None,
    interface: Annotated[Optional[str], typer.Option("--interface", help="NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME, "
                                                     "e.g. eth0 or ib0 (default: the network_interface setting).")] = None,
    registry: RegistryOpt = None,
    image: Annotated[Optional[str], typer.Option("--image", help="Run this reference instead of the plan's "
                                                 "(REGISTRY/NAME@sha256:… for Kubernetes and pyxis).")] = None,
    container: Annotated[str, typer.Option("--container", help="slurm: pyxis (srun --container-image) or docker "
                                           "(the engine on each node).")] = "pyxis",
    hosts: Annotated[Optional[list[str]], typer.Option("--host", help="hosts: one per node, the first the master "
                                                       "(repeatable).")] = None,
    port: Annotated[int, typer.Option("--port", help="The rendezvous (master) port.")] = 29500,
    ssh_port: Annotated[int, typer.Option("--ssh-port", help="stackbuild-sshd's port (DeepSpeed's launcher).")] = 2222,
    name: Annotated[Optional[str], typer.Option("--name", help="Job name (default: the stack's name).")] = None,
    env: Annotated[Optional[list[str]], typer.Option("--env", "-e", metavar="K=V", help="Set a variable on every "
                                                     "node (repeatable).")] = None,
    volumes: Annotated[Optional[list[str]], typer.Option("--volume", "-v", metavar="SRC:DST", help="slurm and "
                                                         "hosts: mount a node's path (repeatable).")] = None,
    engine_args: Annotated[Optional[list[str]], typer.Option("--engine-arg", help="slurm --container docker and "
                                                             "hosts: an extra `docker run` argument (repeatable).")] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output", "-o", help="A new or empty folder for the job's "
                                                       "files (default: ./NAME-KIND).")] = None,
    submit: Annotated[bool, typer.Option("--submit", help="Then hand it to the scheduler: sbatch (slurm); kubectl "
                                         "apply of the JobSet, after the ssh secret for deepspeed (k8s).")] = False,
) -> None:
    """Write a multi-node job for Slurm, Kubernetes or plain hosts that runs a built image's training command."""
    if kind not in KINDS:
        raise UsageError(f"launch kind '{printable(kind)}' is not one of {', '.join(KINDS)}")
    settings = _settings(ctx, registry=registry, gpus_per_node=gpus_per_node, partition=partition,
                         network_interface=interface)
    request = LaunchRequest(kind=kind, stack=spec, target=target, options=tuple(options or ()),
                            command=tuple(command or ()), folder=output_dir, name=name, image=image, nodes=nodes,
                            launcher=launcher, container=container, hosts=tuple(hosts or ()), port=port,
                            ssh_port=ssh_port, env=tuple(env or ()), volumes=tuple(volumes or ()),
                            engine_args=tuple(engine_args or ()), submit=submit)
    written = launch_job(request, settings, engines.connect)
    out.print(f"wrote {written.spec.kind} job {written.spec.name} for {written.spec.image} into {written.folder}:")
    for path in written.files:
        out.print(f"  {path}")
    if submit:
        for line in submit_job(written):
            out.print(f"  {line}")
        return
    out.print("next:")
    for line in written.next_steps():
        out.print(f"  {line}")
