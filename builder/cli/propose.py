"""`stackbuild propose`: the next release of a stack, from the newest versions that work together (builder/lock/
proposal.py). Registered on the main app by builder/cli/commands.py; thin, like it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import output
from ..errors import ProposeError, StackbuildError
from ..lock.proposal import check_proposal_input, propose, proposal_stacks, proposal_usage, write_proposal
from ..lock.report import write_report
from .options import settings as _settings

propose_app = typer.Typer()


@propose_app.command("propose")
def propose_command(
    ctx: typer.Context,
    spec: Annotated[Optional[str], typer.Argument(metavar="STACK", help="A stack or a profile path; the proposal "
                                                  "starts from its default release.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every shipped stack.")] = False,
    date: Annotated[Optional[str], typer.Option("--date", metavar="YYYY-MM-DD", help="Resolve as of this day "
                                                "(default: today, UTC).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="RELEASE", help="The new release's name "
                                                "(default: the date's YYYY.MM).")] = None,
    no_build: Annotated[bool, typer.Option("--no-build", help="Resolve and lock only: build no image, run no "
                                           "check.")] = False,
    report: Annotated[Optional[str], typer.Option("--report", metavar="FILE", help="Write the Markdown report "
                                                  "here (also when the proposal fails).")] = None,
    make_default: Annotated[bool, typer.Option("--make-default", help="Make the new release the stack's "
                                               "default.")] = False,
    retries: Annotated[int, typer.Option("--retries", min=0, max=50, help="Builds to try with one moved pin held "
                                         "back after a failed build or check.")] = 4,
) -> None:
    """Propose a stack's next release: the newest versions of its pins that resolve together as of a date, with
    the profile's compatibility rules applied, its cpu image built and checked; writes the release block, its
    locks and a report of what moved and what was held back (a failed proposal writes only the report)."""
    proposal_usage(spec, every, make_default, report)
    stacks = proposal_stacks(spec)
    check_proposal_input(stacks, date, name)  # every stack's name and date before anything runs
    settings = _settings(ctx)
    done = []
    for stack in stacks:
        output.out.print(f"proposing the next release of {stack}")
        proposal = propose(stack, date, name, build=not no_build, make_default=make_default, settings=settings,
                           retries=retries, on_step=output.print_proposal_step)
        if proposal.ok:
            try:
                write_proposal(proposal)
            except StackbuildError as exc:
                proposal.failure = f"writing it failed: {exc}"
        done.append(proposal)
        output.print_proposal(proposal)
    if report is not None:
        write_report(report, done)
        output.out.print(f"report: {report}")
    failed = [p.spec for p in done if not p.ok]
    if failed:
        raise ProposeError(f"no release proposed for {', '.join(failed)}"
                           + (f" (the report {report} names why)" if report else " (see above; --report FILE keeps it)"))
