"""`stackbuild devcontainer`: write .devcontainer/devcontainer.json for a built image (builder/images/devcontainer.py).
Registered on the main app by builder/cli/commands.py; thin, like it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..engine import connect as engines
from ..images.containers import RunOptions
from ..images.devcontainer import DevcontainerRequest, make_devcontainer
from . import output
from .options import RegistryOpt, StackSpecArg, TargetOpt, WithOpt
from .options import settings as _settings
from .output import out

devcontainer_app = typer.Typer()
DEFAULTS = RunOptions()  # run's defaults: the flags below leave them as they are unless given


@devcontainer_app.command("devcontainer")
def devcontainer_command(
    ctx: typer.Context,
    spec: StackSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    output_dir: Annotated[Path, typer.Option("--output", "-o", readable=False, help="The project folder; the file "
                                             "goes to its .devcontainer/devcontainer.json.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Replace a devcontainer.json that says something "
                                        "else.")] = False,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="none, all, a count, or ids 0,1 (default: all on a "
                                                "GPU target's image, none on cpu), as for run.")] = None,
    env: Annotated[Optional[list[str]], typer.Option("--env", "-e", metavar="K=V", help="Set a variable "
                                                     "(repeatable).")] = None,
    shm_size: Annotated[str, typer.Option("--shm-size", help="/dev/shm size, as for run.")] = DEFAULTS.shm_size,
    ipc_host: Annotated[bool, typer.Option("--ipc-host", help="Share the host's IPC namespace instead of "
                                           "--shm-size.")] = False,
    network: Annotated[str, typer.Option("--network", help="Container network: bridge (the engine's default), host "
                                         "or none (an engine without a bridge network).")] = DEFAULTS.network,
    no_hf_cache: Annotated[bool, typer.Option("--no-hf-cache", help="Do not mount the shared Hugging Face cache "
                                              "volume.")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Write .devcontainer/devcontainer.json for a stack's built image (its content tag), set up like run."""
    run = RunOptions(gpus=gpus, env=env or [], shm_size=shm_size, ipc_host=ipc_host, network=network,
                     hf_cache=not no_hf_cache)
    request = DevcontainerRequest(stack=spec, target=target, options=tuple(options or ()), folder=output_dir,
                                  force=force, run=run)
    written = make_devcontainer(request, _settings(ctx, registry=registry).registry, engines.connect)
    for warning in written.warnings:
        output.warn(warning)
    verb = "wrote" if written.changed else "unchanged:"
    out.print(f"{verb} {written.path} for {written.label}: {written.image}")
    out.print("open the folder in an editor with Dev Containers support, or:")
    out.print(f"  devcontainer up --workspace-folder {written.path.parent.parent}")
