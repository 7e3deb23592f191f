"""Everything a person sees: tables, stack descriptions, results, diagnoses, errors and progress.

The CLI hands this module plain data (dicts and result objects from the library) and it prints;
nothing here decides anything. Tables fit the terminal (80 columns when piped): a column too wide
to fit goes on its own line under its row, never folded a few characters per line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from ..engine.api import BuildEvent
from ..errors import INTERRUPTED, TERMINATED, SmokeError, StackbuildError, Terminated, raise_terminated
from ..images.build import log_dir
from ..safety.atomic import write_atomic
from ..safety.printable import printable_lines
from ..safety.credentials import redact



class _InertConsole(Console):
    """rich's Console that never sends a control or invisible character it was handed: text from a
    profile, a label, a log or a path (a stack title, ps's STACK column, a model's file names) is
    printed with escapes (``\\x1b``, ``\\u202e``) in their place."""

    def print(self, *objects, **kwargs) -> None:  # noqa: A003 - rich's name
        super().print(*(_inert(o) for o in objects), **kwargs)


def _inert(value):
    if isinstance(value, str):
        return printable_lines(value)
    if isinstance(value, Text) and printable_lines(value.plain) != value.plain:
        return Text(printable_lines(value.plain), style=value.style)
    return value


# markup=False: profile text such as "[patch]" must print as written, never as rich markup.
out = _InertConsole(highlight=False, soft_wrap=True, markup=False)


class ErrorBoundary(TyperGroup):
    """The one place errors are turned into `error: …` and an exit code: a traceback only with
    ``--debug``, and never with local variables, which can hold secrets."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def main(self, *args, **kwargs):
        # while the arguments are parsed a signal is noted, not raised (click would turn it into
        # "Aborted!" and exit 1); the command raises it as soon as it starts, and unwinds
        self.pending: list[int] = []
        previous = {number: signal.getsignal(number) for number in self._SIGNALS}
        for number in self._SIGNALS:
            signal.signal(number, lambda signum, frame: self.pending.append(signum))
        try:
            return super().main(*args, **kwargs)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def invoke(self, ctx: typer.Context):
        debug = bool(ctx.params.get("debug"))
        previous = {number: signal.getsignal(number) for number in self._SIGNALS}
        try:
            # while a command runs, Ctrl-C and SIGTERM unwind it (builder/__main__.py: before it)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, raise_terminated)
            pending = getattr(self, "pending", ())
            if pending:
                raise Terminated() if signal.SIGTERM in pending else KeyboardInterrupt()
            return super().invoke(ctx)
        except StackbuildError as exc:
            if debug:
                traceback.print_exc()
            print(f"error: {printable_lines(redact(str(exc)))}", file=sys.stderr)
            ctx.exit(exc.exit_code)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # usage errors and exits: typer prints and exits as it always does
        except Terminated:
            print("error: terminated", file=sys.stderr)
            ctx.exit(TERMINATED)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            ctx.exit(INTERRUPTED)
        except Exception as exc:
            if debug:
                raise
            print(f"error: internal error: {type(exc).__name__}: {printable_lines(redact(str(exc)))} "
                  "(run again with --debug and report it)",
                  file=sys.stderr)
            ctx.exit(1)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def print_json(data, *, lines: bool = False) -> None:
    """JSON on stdout: indented, or one line (progress and results as JSON lines)."""
    if lines:
        print(json.dumps(data), flush=True)
    else:
        print(json.dumps(data, indent=2))


def print_smoke_end(report, as_json: bool) -> None:
    """After the checks' lines (smoke.SmokeReport): the whole report as JSON, or what else happened
    to containers (leftovers of killed runs removed, this one kept)."""
    if as_json:
        print_json(report.as_dict())
        return
    if report.swept:
        out.print(f"removed {len(report.swept)} stopped smoke container(s) of killed runs: {', '.join(report.swept)}")
    if report.container:
        out.print(f"container kept: docker exec -it {report.container} bash")


def write_training_logs(image: str, logs: dict[str, str]) -> list[str]:
    """Each failed training entry's whole output, written to stackbuild's log folder; a line naming each file."""
    lines = []
    folder = log_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for entry, text in logs.items():
        path = folder / f"training-{entry}-{stamp}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, redact(text), SmokeError)
        except SmokeError:
            continue
        lines.append(f"  {entry}: the whole log is {path}")
    return lines


def warn(text: str) -> None:
    print(f"warning: {printable_lines(redact(text))}", file=sys.stderr, flush=True)


def terminal_width() -> int:
    """$COLUMNS when set, else the terminal's width; 80 when the output is not a terminal (piped)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return out.width if out.is_terminal else 80


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None = None) -> None:
    """Columns padded to their widest cell. When the row is wider than the terminal, the last column
    goes on its own line under its row, indented, whole (so titles are read, not folded per word)."""
    width = width or terminal_width()
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    fits = sum(widths) + 2 * (len(widths) - 1) <= width

    def line(cells: Sequence[str], count: int) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells[:count], widths[:count])).rstrip()

    count = len(headers) if fits else len(headers) - 1
    out.print(Text(line(headers, count), style="bold"))
    for row in rows:
        out.print(line(row, count))
        if not fits and row[-1]:
            out.print(f"    {row[-1]}")


def print_stack_list(rows: list[dict]) -> None:
    """`stackbuild list`: one row per stack; its title last (on its own line when narrow)."""
    table = []
    for row in rows:
        # the era releases under one "(era)", then the current ones: a stack's releases fit 80 columns
        names = {era: ", ".join(f"{r['name']}{'*' if r['default'] else ''}" for r in row["releases"] if r["era"] == era)
                 for era in (True, False)}
        releases = "; ".join(filter(None, (names[True] and f"{names[True]} (era)", names[False])))
        targets = ", ".join(sorted({t for r in row["releases"] for t in r["targets"]}))
        table.append((row["name"], releases, targets, row["title"]))
    print_table(("STACK", "RELEASES (* = default)", "TARGETS", "TITLE"), table)


def print_namesake(ns: dict) -> None:
    """The namesake project a release runs, and per script the targets it cannot run on, why, and instead."""
    out.print(f"  namesake: {ns['repository']} at {ns['commit'][:12]} (run unchanged)")
    for script in ns["scripts"]:
        runs = [t for t, state in script["targets"].items() if state["runs"]]
        out.print(f"    {script['path']}: {'runs on ' + ', '.join(runs) if runs else 'does not run on this release'}")
        grouped: dict[tuple, list[str]] = {}  # one paragraph per reason, naming the targets it covers
        for target, state in script["targets"].items():
            if not state["runs"]:
                key = (state["why"], state["fails_with"], state["issue"], state["instead"], state.get("training"))
                grouped.setdefault(key, []).append(target)
        for (why, fails_with, issue, instead, training), names in grouped.items():
            out.print(f"      {', '.join(names)}: cannot run - {why}")
            if fails_with:
                out.print(f"          fails with: {fails_with}{' (doctor: ' + issue + ')' if issue else ''}")
            out.print(f"          instead: {instead}")
            if training:
                out.print(f"          runs in its place: training entry {training} (stackbuild test --training)")


def print_training(entries: list[dict]) -> None:
    """A release's training entries: the command each runs, per target its flags, what it must save."""
    for entry in entries:
        out.print(f"  training {entry['name']}: {entry['summary']}")
        out.print(f"    command: {entry['command']}")
        saves = ("a PEFT adapter, LoRA B trained away from zero" if entry["saves"] == "adapter"
                 else "a full model, weights trained away from the initial ones")
        out.print(f"    processes: {entry['processes']}; saves: {saves}")
        for kind in ("log", "files"):
            for item in entry["evidence"][kind]:
                out.print(f"    evidence ({'log shows' if kind == 'log' else 'saves'}): {item}")
        for target, variant in entry["targets"].items():
            out.print(f"    {target}: {variant['flags'] or '(no flags)'}")
            for kind in ("log", "files"):
                for item in variant["evidence"][kind]:
                    out.print(f"      evidence ({'log shows' if kind == 'log' else 'saves'}): {item}")


def print_stack(info: dict) -> None:
    """`stackbuild show`: a stack's releases with their targets, pins, fixes and checks."""
    out.print(Text(info["name"], style="bold"), f"- {info['title']}")
    out.print(info["description"])
    for note in info["notes"]:
        out.print(f"  note: {note}")
    for shipped in info["files"]:
        out.print(f"  file: /opt/stackbuild/files/{shipped['name']} - {shipped['description']}")
    for rel in info["releases"]:
        flags = ", ".join(x for x in ("default" if rel["default"] else "", "era" if rel["era"] else "") if x)
        out.print()
        out.print(Text(f"{info['name']}@{rel['name']}", style="bold"), f"{f'({flags}) ' if flags else ''}- {rel['summary']}")
        versions = "".join(f"   {label} {version}" for label, version in rel["accelerators"].items())
        out.print(f"  date: {rel['date']}   torch {rel['torch']}{versions}")
        for note in rel["notes"]:
            out.print(f"  note: {note}")
        if rel.get("namesake"):
            print_namesake(rel["namesake"])
        print_training(rel.get("training", []))
        out.print("  targets:")
        for t in rel["targets"]:
            extra = f"  archs {' '.join(t['arch_list'])}" if t["arch_list"] else ""
            index = f"  from {t['torch_index']}" if t["torch_index"] else ""
            out.print(f"    {t['name']:5} {t['base']}  python {t['python']}  {t['torch']}{index}{extra}")
            for name, value in t["env"].items():
                out.print(f"          env {name}={value}")
            out.print(f"          lock {t['lock'] or 'none: its transitive dependencies resolve at build time'}")
        out.print(f"  apt: {' '.join(rel['apt'])}")
        out.print(f"  installed with torch: {' '.join(rel['with_torch']) or '-'}")
        for step in rel["compiled"]:
            iso = " --no-build-isolation" if step["no_build_isolation"] else ""
            out.print(f"  compiled ({', '.join(step['targets'])}): {step['package']}{iso} - {step['why']}")
            if step["requires"]:
                out.print(f"    first: {' '.join(step['requires'])}")
            if step["memory_per_job_gib"]:
                out.print(f"    MAX_JOBS: build host memory / {step['memory_per_job_gib']} GiB")
            if step["parallel_extensions"]:
                out.print("    extensions side by side (build_ext -j), each in its own build folder, sharing those jobs")
            for target, env in step["env"].items():
                out.print(f"    {target}: {' '.join(f'{k}={v}' for k, v in env.items())}")
        out.print("  pins:")
        for pkg in rel["packages"]:
            only = f"  ({', '.join(pkg['targets'])} only)" if len(pkg["targets"]) == 1 else ""
            only += "  (own last layer)" if pkg["last"] else ""
            why = f"  - {pkg['why']}" if pkg["why"] else ""
            out.print(f"    {pkg['requirement']}{only}{why}")
        for held in rel["held"]:
            out.print(f"  held: {held['package']} {held['at']} (newest {held['newest']}) - {held['why']}")
            for line in held["evidence"]:
                out.print(f"    evidence: {line}")
            for ref in ([held["issue"]] if held["issue"] else []) + held["references"]:
                out.print(f"    see: {ref}")
        for patch in rel["patches"]:
            out.print(f"  patch {patch['id']} ({patch['package']}/{patch['file']}): {patch['summary']}")
        for option in rel["options"]:
            out.print(f"  option --with {option['name']} ({', '.join(option['targets'])}): {option['summary']}")
            last = " (in the release's last layer: every earlier layer is the plain image's)" if all(
                p in option["last_packages"] for p in option["packages"]) else ""
            out.print(f"    adds: {' '.join(option['packages'])}{last}")
            for fix in option["fixes"]:
                out.print(f"    {fix['issue']:28} [{fix['via']}] {fix['detail']}")
                out.print(f"    {'':28} {fix['title']}")
            for advice in option["advisories"]:
                out.print(f"    not preventable: {advice['issue']} - {advice['title']}")
                out.print(f"    {'':28} {advice['fix']}")
            if option["checks"]:
                out.print(f"    smoke checks: {', '.join(option['checks'])}")
        for dec in rel["declined"]:
            out.print(f"  option {dec['name']} not shipped: {dec['summary']}")
            out.print(f"    why: {dec['why']}")
            out.print(f"    instead: {dec['instead']}")
        out.print("  fixes:")
        for fix in rel["fixes"]:
            out.print(f"    {fix['issue']:28} [{fix['via']}] {fix['detail']}")
            out.print(f"    {'':28} {fix['title']}")
            if fix["proven_by"]:
                out.print(f"    {'':28} proven by: {', '.join(fix['proven_by'])}")
        out.print("  smoke checks (stackbuild test):")
        for check in rel["checks"]:
            gpu = " (GPU)" if check["gpu"] else ""
            out.print(f"    {check['name']:28} {check['summary']}{gpu}")


class progress:
    """The progress printer for build, pull and push events, closed (its live view stopped) on exit."""

    def __init__(self, quiet: bool, as_json: bool):
        self.reporter = reporter(quiet, as_json)

    def __enter__(self):
        return self.reporter

    def __exit__(self, *exc) -> None:
        close = getattr(self.reporter, "close", None)
        if close:
            close()


def reporter(quiet: bool, as_json: bool):
    """The progress printer for build events: JSON lines, a live rich view on a TTY, or plain lines.

    Warnings always reach stderr. Layer events (pull and push) print when a layer changes state,
    not for every byte count; the live view shows the byte counts.
    """
    layers = _LayerStates()
    if as_json:
        def emit(event: BuildEvent) -> None:
            if event.kind == "layer" and not layers.changed(event):
                return
            _warn_only(event)
            record = {"event": event.kind, "text": event.text}
            if event.step:
                record.update(step=event.step, total=event.total)
            if event.kind == "layer":
                record.update(layer=event.layer, done=event.done, size=event.size)
            print(json.dumps(record), flush=True)
        return emit
    if quiet:
        return _warn_only
    if sys.stdout.isatty():
        return _LiveReporter()

    def plain(event: BuildEvent) -> None:
        event = replace(event, text=printable_lines(event.text))  # a tool's colours and titles, inert
        if event.kind == "step":
            print(f"[{event.step}/{event.total}] {event.text}", flush=True)
        elif event.kind == "cached":
            print("  (cached)", flush=True)
        elif event.kind == "output" and event.text.strip():
            print(f"  {event.text}", flush=True)
        elif event.kind == "note":
            print(event.text, flush=True)
        elif event.kind == "layer":
            if layers.changed(event):
                print(f"  layer {event.layer}: {event.text}", flush=True)
        else:
            _warn_only(event)
    return plain


def _warn_only(event: BuildEvent) -> None:
    if event.kind == "warning":
        warn(event.text)


class _LayerStates:
    """Each layer's last state, so a printer shows state changes rather than every chunk."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    def changed(self, event: BuildEvent) -> bool:
        if self.states.get(event.layer) == event.text:
            return False
        self.states[event.layer] = event.text
        return True


class _LiveReporter:
    """On a terminal: one line per step, a spinner with the current step's latest output or layer progress."""

    def __init__(self) -> None:
        self.status = out.status("starting")
        self.status.start()
        self.current = ""
        self.layers = _LayerStates()
        self.progress: dict[str, str] = {}

    def __call__(self, event: BuildEvent) -> None:
        if event.kind == "step":
            self.current = f"[{event.step}/{event.total}] {event.text[:100]}"
            out.print(self.current)
            self.status.update(self.current)
        elif event.kind == "cached":
            out.print("  (cached)")
        elif event.kind == "output" and event.text.strip():
            self.status.update(f"{self.current}\n  {event.text.strip()[:120]}")
        elif event.kind == "note":
            self.current = event.text
            out.print(event.text)
            self.status.update(event.text)
        elif event.kind == "layer":
            self._layer(event)
        else:
            _warn_only(event)

    def _layer(self, event: BuildEvent) -> None:
        if event.size:
            self.progress[event.layer] = f"{event.layer}: {event.text} {_mib(event.done)}/{_mib(event.size)}"
        else:
            self.progress.pop(event.layer, None)
            if self.layers.changed(event):
                out.print(f"  layer {event.layer}: {event.text}")
        busy = list(self.progress.values())[-4:]
        self.status.update("\n  ".join([self.current, *busy]))

    def close(self) -> None:
        self.status.stop()


def _mib(count: int) -> str:
    return f"{count / 1048576:.1f} MiB"


def print_diagnosis(item: dict) -> None:
    out.print(Text(f"{item['id']}", style="bold"), f"({item['confidence']:.2f}) {item['title']}")
    out.print(f"  line {item['first_line']}" + (f" (also {', '.join(map(str, item['lines'][1:6]))})"
                                                if len(item["lines"]) > 1 else "") + ":")
    for line in item["excerpt"]:
        marker = ">" if line["line"] == item["first_line"] else " "
        out.print(f"  {marker}{line['line']:>6} | {line['text']}")
    out.print(f"  cause: {item['cause']}")
    out.print(f"  fix:   {item['fix']}")


def print_settings(rows: list[tuple[str, str, str]], path) -> None:
    print_table(("SETTING", "VALUE", "SOURCE"), rows)
    out.print(f"config file: {path}")


def print_build_result(result) -> None:
    """What `stackbuild build` did: reused, pulled or built (with its cache hits)."""
    if result.source == "pulled":
        out.print(f"pulled {result.ref.immutable} (prebuilt, labels match the profile) = {result.ref.moving} "
                  f"in {result.seconds:.1f} s")
    elif result.source == "local":
        out.print(f"up to date: {result.ref.moving} = {result.ref.immutable} is already here")
    else:
        cache = " (all cached)" if result.fully_cached else f" ({result.cached_steps} of {result.steps} steps cached)"
        out.print(f"built {result.ref.moving} = {result.ref.immutable} in {result.seconds:.1f} s{cache}")


def print_image(info: dict) -> None:
    """`stackbuild inspect`: what an image's labels say, and whether it matches the local profile."""
    out.print(Text(info["image"], style="bold"))
    spec_text = f"{info['stack']}@{info['release']}" + "".join(f" --with {o}" for o in info["options"])
    out.print(f"  stack:        {spec_text} (target {info['target']})")
    out.print(f"  content hash: {info['content_hash']}")
    verdict = {True: "yes", False: "no: the local profile or templates have changed since it was built",
               None: "unknown: the local profiles have no such stack, release or target"}[info["matches_profile"]]
    out.print(f"  matches the local profile: {verdict}")
    out.print(f"  base:         {info['base']}")
    if info["build_host_cpu"]:
        out.print(f"  built on:     {info['build_host_cpu']}")
    out.print("  pins:")
    for package, version in sorted(info["pins"].items()):
        out.print(f"    {package}=={version}")
    out.print(f"  fixes: {', '.join(info['fixes']) or '-'}")
    for problem in info["problems"]:
        out.print(f"  problem: {problem}")
    if "attachments" in info:
        out.print("  pushed, with what is attached:" if info["attachments"] else
                  "  pushed: no (push attaches an SBOM, a provenance statement and a signature)")
        for entry in info["attachments"]:
            for line in summary_lines(entry):
                out.print(f"    {line}")


def print_pushed(ref, pushed, as_json: bool) -> None:
    """`stackbuild push`: what was pushed, and what was attached beside it."""
    if as_json:
        print_json({"event": "result", "content_hash": ref.content_hash,
                    "pushed": [{"name": p.name, "digest": p.digest} for p in pushed],
                    "attached": pushed[0].attached}, lines=True)
        return
    for item in pushed:
        out.print(f"pushed {item.name} ({item.digest})")
    for kind, tag in pushed[0].attached.items():
        out.print(f"attached {kind}: {ref.repository}:{tag}")


def print_audit(report) -> None:
    """`stackbuild audit`: one block per release or image."""
    verdict = "FAIL" if report.failed else ("report" if report.era and report.unallowed else "ok")
    out.print(Text(f"{verdict:6} {report.subject}: {report.packages} packages, {len(report.findings)} known "
                   f"vulnerabilities ({len(report.unallowed)} not allowed), {len(report.not_seen)} not seen",
                   style="bold"))
    for finding in report.findings:
        v = finding.vulnerability
        fixed = f"fixed in {', '.join(v.fixed_in)}" if v.fixed_in else "no fixed version"
        state = (f"allowed until {finding.allowed_by.expires}: {finding.allowed_by.reason}" if finding.allowed_by
                 else "NOT ALLOWED")
        aliases = f" ({', '.join(v.aliases)})" if v.aliases else ""
        out.print(f"  {finding.package}=={finding.version} {v.id}{aliases}: {fixed}; {state}")
        if v.summary:
            out.print(f"      {v.summary}")
    for entry in report.expired:
        out.print(f"  audit_allow {entry.id} expired on {entry.expires}: look again, then renew or drop it")
    for entry in report.unused:
        out.print(f"  audit_allow {entry.id} matches no finding: drop it")
    if report.not_seen:
        shown = ", ".join(f"{n}=={v}" for n, v, _ in report.not_seen[:8])
        more = f" and {len(report.not_seen) - 8} more" if len(report.not_seen) > 8 else ""
        reasons = sorted({why for _, _, why in report.not_seen})
        out.print(f"  not seen: {shown}{more} ({'; '.join(reasons)})")
    for note in report.notes:
        out.print(f"  note: {note}")


def summary_lines(entry: dict) -> list[str]:
    """`inspect`'s lines for one registry's attachments."""
    lines = [f"{entry['repository']}@{entry['digest']}"]
    if "error" in entry:
        return lines + [f"  cannot read its attachments: {entry['error']}"]
    verified = f", verified by {', '.join(entry['verified_by'])}" if entry["verified_by"] else ""
    lines.append(f"  signatures: {entry['signatures']}{verified}")
    sbom = entry.get("sbom")
    lines.append(f"  sbom: {sbom['format']}, {sbom['components']} components" if sbom else "  sbom: none")
    provenance = entry.get("provenance")
    if not provenance:
        return lines + ["  provenance: none"]
    predicate = provenance["statement"].get("predicate") or {}
    definition = predicate.get("buildDefinition") or {}
    run = predicate.get("runDetails") or {}
    lines.append(f"  provenance: {provenance['statement'].get('predicateType')}"
                 + (f" (signed, verified by {provenance['verified_by']})" if provenance["verified_by"] else ""))
    for dependency in definition.get("resolvedDependencies") or []:
        role = (dependency.get("annotations") or {}).get("role") or dependency.get("name") or "input"
        digests = ", ".join(f"{k}:{v}" for k, v in (dependency.get("digest") or {}).items())
        lines.append(f"    {role}: {dependency.get('uri')} {digests}")
    for product in run.get("byproducts") or []:
        lines.append(f"    {product.get('name')}: sha256:{(product.get('digest') or {}).get('sha256')}")
    builder = run.get("builder") or {}
    lines.append(f"    builder: {builder.get('id')}; engine: {(builder.get('version') or {}).get('engine')}")
    return lines


def print_locked(label: str, relocked, path: str) -> None:
    """What `stackbuild lock` made, and what moved since the previous lock (per section) and rebuilds."""
    lock = relocked.lock
    sizes = ", ".join(f"{key} {len(packages)}" for key, packages in lock.groups)
    out.print(f"locked {label}: {len(lock.packages())} packages ({sizes}) -> {path}")
    for pin in lock.git_pins():
        out.print(f"  {pin.requirement}: a git pin, pinned to its full commit; no hash can check it")
    if relocked.note:
        out.print(f"  {relocked.note}")
    changes = relocked.changes
    if changes is None:
        out.print("  a new lock: no previous one to compare with")
        return
    if not changes.moved:
        out.print("  nothing moved: the same packages, versions and hashes as the previous lock; no layer rebuilds")
        return
    for key, rows in changes.sections:
        for name, old, new in rows:
            what = f"{old} -> {new}" if old and new else (f"added {new}" if new else f"removed {old}")
            out.print(f"  [{key}] {name} {what}")
    for key, name in changes.rehashed:
        out.print(f"  [{key}] {name}: the same version with other hashes")
    out.print(f"  layers that rebuild: {', '.join(f'[{k}]' for k in changes.rebuilt)} "
              "(the sections before the first changed one stay cached)")


def print_lock_check(check, path: str) -> None:
    """One line of `stackbuild lock --check` (and what --resolve found)."""
    if check.state == "unlocked":
        out.print(f"unlocked  {check.label}: no {path}")
    elif check.state == "missing":
        out.print(f"missing   {check.label}: no {path}")
    elif check.state == "stale":
        out.print(f"stale     {check.label}: " + "\n          ".join(check.problems))
    elif check.state == "orphan":
        out.print(f"orphan    {check.label}: no stack, release and target of that name")
    elif check.state == "forged":
        out.print(f"forged    {check.label}: {path} is not what its inputs resolve to, whatever its seal says:\n"
                  + "\n".join(f"          {p}" for p in check.problems))
    elif check.state == "unresolved":
        out.print(f"unresolved {check.label}: cannot resolve it again to check it: " + "; ".join(check.problems))
    else:
        out.print(f"ok        {check.label}: {path}")
    if check.drift:
        moves = ", ".join(f"{n} {a or '-'} -> {b or '-'}" for n, a, b in check.drift)
        out.print(f"          (information) locking afresh today would move: {moves}")


def print_package_diff(rows, first: str, second: str, count: int) -> None:
    if not rows:
        out.print(f"no differences: {count} packages each")
        return
    print_table(("PACKAGE", first, second), [(name, x or "-", y or "-") for name, x, y in rows])
    added = sum(1 for _, x, _ in rows if x is None)
    removed = sum(1 for _, _, y in rows if y is None)
    out.print(f"{len(rows) - added - removed} changed, {added} only in B, {removed} only in A")


def print_checks(checks: list[dict]) -> None:
    """Host or model checks of `stackbuild doctor`, with the fix of what is not ok."""
    for check in checks:
        fix = f"\n        fix: {check['fix']}" if check.get("fix") and check["status"] != "ok" else ""
        out.print(f"{check['status'].upper():7} {check['name']:18} {check['detail']}{fix}")


def print_proposal_step(step) -> None:
    """One step of `stackbuild propose` as it happens."""
    out.print(f"  {'ok' if step.ok else '--'}  {step.what}")
    if not step.ok:
        for line in step.detail[-6:]:
            out.print(f"        {line}")


def print_proposal(proposal) -> None:
    """What `stackbuild propose` proposed for one stack: the moves, the held pins, what it wrote."""
    if not proposal.ok:
        out.print(f"{proposal.spec}: not proposed - nothing written")
        return
    for d in sorted(proposal.decisions.values(), key=lambda d: d.name):
        move = f"{d.current} -> {d.chosen}" if d.moved else d.current
        if d.moved or d.held:
            out.print(f"  {d.name} {move}" + (f"  (held: newest {d.newest} - {d.why})" if d.held else ""))
    if proposal.written:
        out.print(f"{proposal.spec} proposed: wrote {', '.join(proposal.written)}")
