"""What a release proposal says of itself: the held entries it writes into the profile (each pin below its
newest version, with why and its evidence) and the Markdown report (``stackbuild propose --report FILE``):
for each stack, what moved from which version to which, what was held back and why, what was run and
what was written. builder/lock/proposal.py makes the proposals; this only reads them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from ..errors import ProposeError
from ..safety.atomic import write_atomic
from ..safety.credentials import redact
from ..safety.paths import display_path
from ..safety.printable import printable

if TYPE_CHECKING:  # only the type: proposal.py imports this module
    from .proposal import Proposal

EVIDENCE_LINES = 12  # of a resolver error, build tail or check output, kept in the profile's held entry


def held_entries(proposal: Proposal) -> tuple[dict, ...]:
    """The profile's held entries for every pin below its newest version, and each held entry of the release it
    starts from whose pin stays where that entry holds it (its reason still stands: scipy 1.18 needing a newer
    Python than the image's is no newer version uv offers for that Python, so the proposal finds no hold of its
    own)."""
    entries = {d.name: {"package": d.name, "at": d.chosen, "newest": d.newest, "why": d.why or "held back",
                        "evidence": list(d.evidence[-EVIDENCE_LINES:])}
               for d in proposal.decisions.values() if d.held}
    for held in proposal.carried:
        decision = proposal.decisions.get(canonicalize_name(held.package))
        if decision is None or decision.name in entries or decision.chosen != held.at:
            continue
        entries[decision.name] = {"package": held.package, "at": held.at, "newest": held.newest, "why": held.why,
                                  "evidence": list(held.evidence), "issue": held.issue,
                                  "references": list(held.references)}
    return tuple(entries[name] for name in sorted(entries))


def report_markdown(proposals: list[Proposal]) -> str:
    """The Markdown report of one or more proposals: what moved from -> to, what was held and why, the evidence."""
    out: list[str] = []
    for p in proposals:
        state = "proposed" if p.ok else "FAILED"
        out += [f"# {p.spec} ({state}): the newest versions as of {p.date}", ""]
        out += [f"From {p.stack}@{p.base}, the stack's default release, in {display_path(p.profile)}.", ""]
        if not p.ok:
            out += ["Nothing was written: the blocking incompatibility, with its error:", "", "```text",
                    *[printable(redact(line)) for line in p.failure.splitlines()], "```", ""]
        moved = [d for d in p.decisions.values() if d.moved]
        out += ["## Moved", ""]
        if moved:
            out += ["| package | from | to | newest |", "|---|---|---|---|"]
            out += [f"| {d.name} | {d.current} | {d.chosen} | {d.newest} |" for d in sorted(moved, key=lambda d: d.name)]
        else:
            out += ["Nothing moved."]
        if p.cuda:
            out += ["", f"CUDA {p.cuda[0]} -> {p.cuda[1]} (the CUDA of PyPI's torch {p.decisions['torch'].chosen})."]
        for target, (base_ref, _python) in p.targets.items():
            out += [f"The {target} target moves to {base_ref}, with CUDA from torch's wheels (the compiler from "
                    "PyPI where it compiles)."]
        entries = held_entries(p)
        out += ["", "## Held back", ""]
        if not entries:
            out += ["Nothing: every pin is at the newest version of the date."]
        for entry in entries:
            carried = not p.decisions[canonicalize_name(entry["package"])].held
            out += [f"### {entry['package']} {entry['at']} (newest {entry['newest']})", "",
                    entry["why"] + (f" (held in {p.base}; the reason still stands)" if carried else ""), ""]
            if entry["evidence"]:
                out += ["```text", *entry["evidence"], "```", ""]
        carried_names = {canonicalize_name(e["package"]) for e in entries}
        unchanged = [d for d in p.decisions.values() if not d.moved and not d.held and d.name not in carried_names]
        if unchanged:
            out += ["", "Already the newest: " + ", ".join(f"{d.name} {d.current}" for d in
                                                          sorted(unchanged, key=lambda d: d.name)) + "."]
        out += ["", "## What was run", ""]
        for step in p.steps:
            out += [f"- {'ok' if step.ok else 'no'}: {step.what}"]
            if step.detail and not step.ok:
                out += ["", "  ```text", *[f"  {line}" for line in step.detail], "  ```", ""]
        if p.checks:
            out += ["", "Smoke checks of the cpu image: " + ", ".join(f"{c} {s}" for c, s, _ in p.checks) + "."]
        if p.training:
            out += ["", f"Training scripts: {p.training}."]
        if p.review:
            out += ["", "## Text to read again", "", "These lines of the new block still name a version that moved:",
                    "", *[f"- `{line}`" for line in p.review]]
        if p.written:
            out += ["", "## Written", "", *[f"- {path}" for path in p.written]]
        out += [""]
    return "\n".join(out)


def write_report(path: str, proposals: list[Proposal]) -> None:
    write_atomic(path, report_markdown(proposals), ProposeError)
