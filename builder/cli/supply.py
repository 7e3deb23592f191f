"""The supply-chain commands: `stackbuild sbom` (what is in an image) and `stackbuild audit` (its locked
packages' known vulnerabilities). Registered on the main app by builder/cli/commands.py; thin, like it."""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Optional

import typer

from ..engine import connect as engines
from . import output
from ..supply.audit import VulnerabilitySource, audit_what
from ..supply.audit import failure as audit_failure
from ..errors import RenderError, UsageError
from ..images.lookup import image_of
from .options import ImageSpecArg, JsonOpt, RegistryOpt, TargetOpt, WithOpt
from .options import settings as _settings
from .output import print_json
from ..safety.printable import printable
from ..safety.files import write_output
from ..supply.sbom import sbom_json

supply_app = typer.Typer()


@supply_app.command("sbom")
def sbom_command(
    ctx: typer.Context,
    spec: ImageSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    registry: RegistryOpt = None,
    output_file: Annotated[Optional[str], typer.Option("--output", "-o", help="Write it to this file.")] = None,
) -> None:
    """Print an image's SBOM (CycloneDX 1.6 JSON): every Debian and Python package in it, with licences and the
    lock's hashes, and the base image with its digest."""
    engine = engines.connect()
    image = image_of(engine, spec, target, options or [], _settings(ctx, registry=registry).registry)
    document = sbom_json(engine, engine, image)
    if output_file:
        try:
            write_output(output_file, document.encode() + b"\n")
        except OSError as exc:  # InputRefused too: a device, a FIFO, a folder
            raise RenderError(f"cannot write {printable(output_file)}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(document + "\n")


@supply_app.command("audit")
def audit_command(
    ctx: typer.Context,
    spec: Annotated[Optional[str], typer.Argument(metavar="STACK[@RELEASE]|IMAGE", help="A stack release (every "
                                                  "target's lock) or an image (its lock label).")] = None,
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="Only this target's lock.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every release of every shipped stack (era releases "
                                        "report, current ones can fail).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Known vulnerabilities of the locked Python packages (PyPI's data), against the release's audit_allow
    list; exit 14 on one neither fixed nor allowed in a current release, or on an expired entry."""
    if (spec is None) == (not every):
        raise UsageError("name a stack release or an image (stackbuild audit qlora@2026.11), or pass --all")
    settings = _settings(ctx)
    source = VulnerabilitySource(settings.audit_url)
    reports = audit_what(spec, target, every, functools.cache(engines.connect), source)
    if as_json:
        print_json([r.as_dict() for r in reports])
    else:
        for report in reports:
            output.print_audit(report)
    failed = audit_failure(reports)
    if failed:
        raise failed
