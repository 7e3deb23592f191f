"""Replay a release through `stackbuild propose`: would the proposal, run from the release before it on the
release's own date, have made it?

For each stack: a copy of the profile without RELEASE (default: each stack's default release), whose
default is the release RELEASE was made from (--from, default: the one before it in the file), and without
the options RELEASE declines (`declined:`: a person's decision that a proposal does not make). Then
`propose COPY --date RELEASE's date --no-build` (uv against the index, no image built), and the proposed
pins and every lock compared with the committed ones, package by package. A pin RELEASE adds that its base
did not have (a proposal moves pins; it never adds a package) is shown as such.

    python bench/propose_replay.py                 # every shipped stack's default release
    python bench/propose_replay.py qlora --release 2026.12 --keep /tmp/replay

It needs the index (PyPI or the site's `pip_index_url`); it writes only under a temporary folder (or --keep).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import _shared  # noqa: F401  (the checkout on sys.path)
import yaml

from builder.lock.proposal import propose, write_proposal
from builder.lock.report import report_markdown
from builder.profile.load import available_stacks, load_stack, stack_path

ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)", re.M)


def replay_copy(stack: str, release: str, base: str | None, folder: Path) -> tuple[Path, str, str, list[str]]:
    """Write the profile without ``release`` into ``folder``; (path, base release, date, options dropped)."""
    data = yaml.safe_load(stack_path(stack).read_text(encoding="utf-8"))
    releases = data["releases"]
    names = list(releases)
    if release not in releases:
        raise SystemExit(f"{stack} has no release {release}")
    base = base or names[names.index(release) - 1]
    new = releases.pop(release)
    declined = [name for name in (new.get("declined") or {}) if name in (releases[base].get("options") or {})]
    for name in declined:
        del releases[base]["options"][name]
    data["default_release"] = base
    path = folder / f"{stack}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000), encoding="utf-8")
    return path, base, str(new["date"]), declined


def lock_entries(path: Path) -> dict[str, str]:
    return dict(ENTRY.findall(path.read_text(encoding="utf-8"))) if path.exists() else {}


def compare(stack: str, release: str, copy: Path, name: str) -> list[str]:
    """Lines saying where the proposal differs from the committed release: pins, then each lock."""
    made = load_stack(stack).release(release)
    proposed = load_stack(str(copy)).release(name)
    out = []
    a, b = made.pinned_versions(), proposed.pinned_versions()
    for package in sorted(set(a) | set(b)):
        if a.get(package) != b.get(package):
            out.append(f"  pin {package}: {release} has {a.get(package) or '-'}, the proposal "
                       + (b.get(package) or "has none (a package the release added)"))
    if (made.torch, made.accelerator_versions) != (proposed.torch, proposed.accelerator_versions):
        out.append(f"  torch {made.torch} {made.accelerator_versions} vs {proposed.torch} {proposed.accelerator_versions}")
    locks = sorted(stack_path(stack).parent.joinpath("locks").glob(f"{stack}@{release}-*.txt"))
    for lock in locks:
        mine = copy.parent / "locks" / lock.name.replace(f"@{release}-", f"@{name}-")
        x, y = lock_entries(lock), lock_entries(mine)
        if not y:
            out.append(f"  {lock.name}: the proposal made no such lock")
            continue
        moved = [f"{p} {x.get(p) or '-'} / {y.get(p) or '-'}" for p in sorted(set(x) | set(y)) if x.get(p) != y.get(p)]
        out.append(f"  {lock.name}: {len(x)} packages, " + (f"differs: {', '.join(moved)}" if moved else "identical"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="*", help="stacks (default: every shipped one)")
    parser.add_argument("--release", help="the release to replay (default: each stack's default)")
    parser.add_argument("--from", dest="base", help="the release it was made from (default: the one before it)")
    parser.add_argument("--keep", type=Path, help="write the copies, locks and reports here and keep them")
    parser.add_argument("--report", type=Path, help="also write the proposals' Markdown report here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="stackbuild-replay-"))
    folder.mkdir(parents=True, exist_ok=True)
    proposals = []
    for stack in args.stacks or available_stacks():
        release = args.release or load_stack(stack).default_release
        copy, base, date, declined = replay_copy(stack, release, args.base, folder)
        name = f"{release}-replay"
        print(f"{stack}@{release}: proposing from {base} as of {date}"
              + (f" (without the option{'s' * (len(declined) > 1)} it declines: {', '.join(declined)})" if declined else ""))
        proposal = propose(str(copy), date, name, build=False)
        proposals.append(proposal)
        if not proposal.ok:
            print(f"  the proposal failed: {proposal.failure}")
            continue
        for d in sorted(proposal.decisions.values(), key=lambda d: d.name):
            if d.held:
                print(f"  held {d.name} {d.chosen} (newest {d.newest}): {d.why}")
        write_proposal(proposal)
        for line in compare(stack, release, copy, name):
            print(line)
    if args.report:
        args.report.write_text(report_markdown(proposals), encoding="utf-8")
    if not args.keep:
        import shutil
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if all(p.ok for p in proposals) else 1


if __name__ == "__main__":
    sys.exit(main())
