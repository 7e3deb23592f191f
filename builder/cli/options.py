"""Options and arguments shared by the commands (builder/cli/commands.py, builder/cli/supply.py), declared once,
and the settings in force for a command."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..config import load_settings
from ..profile import targets

TargetOpt = Annotated[Optional[str], typer.Option("--target", "-t", help=targets.help_text())]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ImageSpecArg = Annotated[str, typer.Argument(metavar="STACK[@RELEASE]|IMAGE", help="A stack (its built image is "
                                             "found by content tag) or an image name.")]
StackSpecArg = Annotated[str, typer.Argument(metavar="STACK[@RELEASE]", help="A stack, stack@release, or a profile "
                                             "path.")]
WithOpt = Annotated[Optional[list[str]], typer.Option("--with", help="Enable a release option (repeatable), e.g. "
                                                      "xformers.")]
RegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="Registry for prebuilt images, "
                                                    "HOST[:PORT][/PATH] (default: the registry setting).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result.")]
ProgressJsonOpt = Annotated[bool, typer.Option("--json", help="Print progress and the result as JSON lines.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="A container started by stackbuild run.")]
NamesArg = Annotated[list[str], typer.Argument(metavar="NAME...", help="stackbuild containers.")]
WorkdirOpt = Annotated[Optional[str], typer.Option("--workdir", "-w", help="Working directory inside.")]


def settings(ctx: typer.Context, **overrides):
    """The settings in force: the --config file, STACKBUILD_* variables, then these flags."""
    return load_settings(ctx.obj["config"], overrides or None)
