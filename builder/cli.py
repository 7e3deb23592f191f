"""The `stackbuild` command line: parse options, call one library function, print.

Errors: every ``StackbuildError`` is caught in one place (``_ErrorBoundary``) and printed as
``error: …`` on stderr with its exit code; a traceback only with ``--debug`` (and never with local
variables, which can hold secrets).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from . import __version__
from .build import build_image, parse_build_args, prepare
from .catalog import describe_stack, list_stacks, profile_schema, split_spec
from .config import config_path, load_settings
from .containers import (RunOptions, check_options, default_name, find, list_containers, run_container, running,
                         shell_argv)
from .engine import BuildEvent, Engine
from .doctor import check_host, check_model, diagnose, diagnose_file, diagnosis_lines
from .errors import (EXIT_CODES, ContainerError, DoctorError, LockError, RenderError, SelectionError, SmokeError,
                     StackbuildError, UsageError)
from .lock import lock_inputs, lock_path, lock_problems, make_lock, package_diff, read_lock, write_lock
from .plan import plan_build
from .profile import TARGETS, available_stacks, load_stack
from .registry import describe_image, pull_verified, push_image, require_registry, resolve_ref
from .render import render_context
from .resources import display_path
from .smoke import SmokeResult, image_for, looks_like_image, run_smoke, write_junit


class _ErrorBoundary(TyperGroup):
    """The one place errors are turned into `error: …` and an exit code."""

    def invoke(self, ctx: typer.Context):
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except StackbuildError as exc:
            if debug:
                traceback.print_exc()
            print(f"error: {exc}", file=sys.stderr)
            ctx.exit(exc.exit_code)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # usage errors and exits: typer prints and exits as it always does
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            ctx.exit(130)
        except Exception as exc:
            if debug:
                raise
            print(f"error: internal error: {type(exc).__name__}: {exc} (run again with --debug and report it)",
                  file=sys.stderr)
            ctx.exit(1)


app = typer.Typer(
    cls=_ErrorBoundary,
    name="stackbuild",
    help="Curated, pinned Docker images for LLM training stacks that work the first time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog="Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
)
# markup=False: profile text such as "[patch]" must print as written, never as rich markup.
out = Console(highlight=False, soft_wrap=True, markup=False)

TargetOpt = Annotated[Optional[str], typer.Option("--target", "-t", help="cuda (default) or cpu.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ImageSpecArg = Annotated[str, typer.Argument(metavar="STACK[@RELEASE]|IMAGE", help="A stack (its built image is "
                                             "found by content tag) or an image name.")]
WithOpt = Annotated[Optional[list[str]], typer.Option("--with", help="Enable a release option (repeatable).")]


def _version(value: bool) -> None:
    if value:
        print(f"stackbuild {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="Settings file (default: $STACKBUILD_CONFIG or "
                                     "~/.config/stackbuild/config.toml).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """stackbuild: render, build, test and diagnose LLM training images."""
    ctx.obj = {"config": config}


@app.command("list")
def list_command(as_json: JsonOpt = False) -> None:
    """List the curated stacks with their releases and targets."""
    rows = list_stacks()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("STACK", no_wrap=True)
    table.add_column("RELEASES (* = default)", no_wrap=True)
    table.add_column("TARGETS", no_wrap=True)
    table.add_column("TITLE", overflow="fold")
    for row in rows:
        releases = ", ".join(
            f"{r['name']}{'*' if r['default'] else ''}{' (era)' if r['era'] else ''}" for r in row["releases"]
        )
        targets = ", ".join(sorted({t for r in row["releases"] for t in r["targets"]}))
        table.add_row(row["name"], releases, targets, row["title"])
    out.print(table)


@app.command("show")
def show_command(
    spec: Annotated[str, typer.Argument(metavar="STACK[@RELEASE]", help="A stack, stack@release, or a profile path.")],
    as_json: JsonOpt = False,
) -> None:
    """Print a stack's pins, build flags, patches, fixes and targets (every release, or one)."""
    name, release = split_spec(spec)
    info = describe_stack(load_stack(name), release)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    _print_stack(info)


def _print_stack(info: dict) -> None:
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
        out.print(f"  date: {rel['date']}   torch {rel['torch']}   CUDA {rel['cuda']}")
        for note in rel["notes"]:
            out.print(f"  note: {note}")
        if rel["namesake"]:
            _print_namesake(rel["namesake"])
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
            for target, env in step["env"].items():
                out.print(f"    {target}: {' '.join(f'{k}={v}' for k, v in env.items())}")
        out.print("  pins:")
        for pkg in rel["packages"]:
            only = f"  ({', '.join(pkg['targets'])} only)" if len(pkg["targets"]) == 1 else ""
            only += "  (own last layer)" if pkg["last"] else ""
            why = f"  - {pkg['why']}" if pkg["why"] else ""
            out.print(f"    {pkg['requirement']}{only}{why}")
        for patch in rel["patches"]:
            out.print(f"  patch {patch['id']} ({patch['package']}/{patch['file']}): {patch['summary']}")
        for option in rel["options"]:
            out.print(f"  option --with {option['name']} ({', '.join(option['targets'])}): {option['summary']}")
            out.print(f"    adds: {' '.join(option['packages'])}")
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


def _print_namesake(ns: dict) -> None:
    out.print(f"  namesake: {ns['repository']} at {ns['commit'][:12]} (run unchanged)")
    for script in ns["scripts"]:
        runs = [t for t, state in script["targets"].items() if state["runs"]]
        out.print(f"    {script['path']}: {'runs on ' + ', '.join(runs) if runs else 'does not run on this release'}")
        grouped: dict[tuple, list[str]] = {}  # one paragraph per reason, naming the targets it covers
        for target, state in script["targets"].items():
            if not state["runs"]:
                key = (state["why"], state["fails_with"], state["issue"], state["instead"])
                grouped.setdefault(key, []).append(target)
        for (why, fails_with, issue, instead), targets in grouped.items():
            out.print(f"      {', '.join(targets)}: cannot run - {why}")
            if fails_with:
                out.print(f"          fails with: {fails_with}{' (doctor: ' + issue + ')' if issue else ''}")
            out.print(f"          instead: {instead}")


@app.command("render")
def render_command(
    spec: Annotated[str, typer.Argument(metavar="STACK[@RELEASE]", help="A stack, stack@release, or a profile path.")],
    target: TargetOpt = None,
    options: Annotated[
        Optional[list[str]], typer.Option("--with", help="Enable a release option (repeatable), e.g. xformers.")
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the Dockerfile here instead of stdout.")
    ] = None,
    context: Annotated[
        Optional[Path], typer.Option("--context", help="Write the whole build context into this new or empty folder.")
    ] = None,
) -> None:
    """Render the Dockerfile of a stack (pure: no Docker, no network)."""
    name, release = split_spec(spec)
    plan = plan_build(load_stack(name), release, target, options or [])
    ctx = render_context(plan)
    if context is not None:
        _write_context(ctx, context)
    if output is not None:
        _write_atomic(output, ctx.dockerfile)
    if output is None and context is None:
        sys.stdout.write(ctx.dockerfile)


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a failure leaves no half file."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise RenderError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise RenderError(f"cannot write {path}: it is a folder (use --context for a build context)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise RenderError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RenderError(f"cannot write {path}: {exc.strerror}") from None


def _write_context(ctx, folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RenderError(f"--context {folder} must be a new or empty folder")
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        raise RenderError(f"cannot write {folder}: folder {parent} does not exist")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    except OSError as exc:
        raise RenderError(f"cannot write {folder}: {exc.strerror}") from None
    try:
        ctx.write(staging)
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RenderError(f"cannot write {folder}: {exc.strerror}") from None


config_app = typer.Typer(help="Show the settings in force.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print every setting, its value (credentials masked) and where it came from."""
    settings = load_settings(ctx.obj["config"])
    rows = settings.shown()
    if as_json:
        print(json.dumps({name: {"value": value, "source": source} for name, value, source in rows}, indent=2))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SETTING", "VALUE", "SOURCE"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    out.print(f"config file: {config_path(ctx.obj['config'])}")


RegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="Registry for prebuilt images, "
                                                    "HOST[:PORT][/PATH] (default: the registry setting).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result.")]
ProgressJsonOpt = Annotated[bool, typer.Option("--json", help="Print progress and the result as JSON lines.")]
StackSpecArg = Annotated[str, typer.Argument(metavar="STACK[@RELEASE]", help="A stack, stack@release, or a profile "
                                             "path.")]


@app.command("build")
def build_command(
    ctx: typer.Context,
    spec: StackSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    tags: Annotated[Optional[list[str]], typer.Option("--tag", help="Also tag the image with this name (repeatable).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build every step afresh (never reuse or pull).")] = False,
    pull: Annotated[bool, typer.Option("--pull", help="Pull the base image even if present.")] = False,
    no_pull: Annotated[bool, typer.Option("--no-pull", help="Never pull a prebuilt image from the registry.")] = False,
    registry: RegistryOpt = None,
    network: Annotated[Optional[str], typer.Option("--network", help="Build network: default, host, bridge or none.")] = None,
    build_args: Annotated[Optional[list[str]], typer.Option("--build-arg", help="NAME=VALUE, e.g. HTTPS_PROXY (repeatable).")] = None,
    quiet: QuietOpt = False,
    as_json: ProgressJsonOpt = False,
) -> None:
    """Reuse, pull or build a stack's image: a registry's prebuilt image of exactly this content, else a build."""
    settings = load_settings(ctx.obj["config"], {"build_network": network, "registry": registry})
    args = parse_build_args(build_args or [])
    name, release = split_spec(spec)
    context = prepare(name, release, target, options or [])
    with _progress(quiet, as_json) as reporter:
        result = build_image(context, settings, extra_tags=tuple(tags or ()), nocache=no_cache, pull=pull,
                             use_registry=not no_pull, buildargs=args, on_event=reporter)
    summary = {
        "image": result.ref.moving, "content_tag": result.ref.immutable, "id": result.image_id,
        "content_hash": result.ref.content_hash, "source": result.source, "steps": result.steps,
        "cached_steps": result.cached_steps, "seconds": round(result.seconds, 1),
    }
    if as_json:
        print(json.dumps({"event": "result", **summary}), flush=True)
        return
    if result.source == "pulled":
        out.print(f"pulled {result.ref.immutable} (prebuilt, labels match the profile) = {result.ref.moving} "
                  f"in {result.seconds:.1f} s")
    elif result.source == "local":
        out.print(f"up to date: {result.ref.moving} = {result.ref.immutable} is already here")
    else:
        cache = " (all cached)" if result.fully_cached else f" ({result.cached_steps} of {result.steps} steps cached)"
        out.print(f"built {result.ref.moving} = {result.ref.immutable} in {result.seconds:.1f} s{cache}")


def _registry_job(ctx: typer.Context, command: str, spec: str, target: str | None, options: list[str] | None,
                  registry: str | None) -> tuple:
    """What pull and push start from: the stack's build context, the registry (required), the engine."""
    settings = load_settings(ctx.obj["config"], {"registry": registry})
    chosen = require_registry(settings.registry, command)
    name, release = split_spec(spec)
    return prepare(name, release, target, options or []), chosen, Engine.connect()


@app.command("pull")
def pull_command(
    ctx: typer.Context,
    spec: StackSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    registry: RegistryOpt = None,
    quiet: QuietOpt = False,
    as_json: ProgressJsonOpt = False,
) -> None:
    """Pull the prebuilt image the local profile would build (its content tag), with per-layer progress."""
    context, chosen, engine = _registry_job(ctx, "pull", spec, target, options, registry)
    ref, _, _ = resolve_ref(engine, context, chosen)
    with _progress(quiet, as_json) as reporter:
        pulled = pull_verified(engine, context.plan, ref, reporter)
    if as_json:
        print(json.dumps({"event": "result", "image": ref.moving, "content_tag": ref.immutable, "id": pulled.image_id,
                          "content_hash": ref.content_hash}), flush=True)
        return
    out.print(f"pulled {ref.immutable} = {ref.moving} (labels match the profile)")


@app.command("push")
def push_command(
    ctx: typer.Context,
    spec: StackSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    registry: RegistryOpt = None,
    quiet: QuietOpt = False,
    as_json: ProgressJsonOpt = False,
) -> None:
    """Push the built image of a stack under its content tag and its moving tag."""
    context, chosen, engine = _registry_job(ctx, "push", spec, target, options, registry)
    with _progress(quiet, as_json) as reporter:
        ref, pushed = push_image(engine, context, chosen, reporter)
    if as_json:
        print(json.dumps({"event": "result", "content_hash": ref.content_hash,
                          "pushed": [{"name": p.name, "digest": p.digest} for p in pushed]}), flush=True)
        return
    for item in pushed:
        out.print(f"pushed {item.name} ({item.digest})")


@app.command("inspect")
def inspect_command(
    ctx: typer.Context,
    spec: ImageSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What an image says about itself (its labels): stack, release, target, pins, fixes, content hash."""
    settings = load_settings(ctx.obj["config"], {"registry": registry})
    engine = Engine.connect()
    image = image_for(engine, spec, target, options or [], settings.registry)
    info = describe_image(engine, image)
    profile = spec if image != spec else info["stack"]
    info["matches_profile"] = _matches_profile(engine, profile, info, settings.registry)
    if as_json:
        print(json.dumps(info, indent=2))
        return
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


def _matches_profile(engine: Engine, profile: str, info: dict, registry: str | None) -> bool | None:
    """Whether the image's content hash is the one the local profile would build now (None: no such profile)."""
    try:
        context = prepare(split_spec(profile)[0], info["release"], info["target"], info["options"])
    except StackbuildError:
        return None
    ref, _, _ = resolve_ref(engine, context, registry)
    return ref.content_hash == info["content_hash"]


class _progress:
    """The progress printer for build, pull and push events, closed (its live view stopped) on exit."""

    def __init__(self, quiet: bool, as_json: bool):
        self.reporter = _reporter(quiet, as_json)

    def __enter__(self):
        return self.reporter

    def __exit__(self, *exc) -> None:
        close = getattr(self.reporter, "close", None)
        if close:
            close()


def _reporter(quiet: bool, as_json: bool):
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
        print(f"warning: {event.text}", file=sys.stderr, flush=True)


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


@app.command("lock")
def lock_command(
    ctx: typer.Context,
    spec: Annotated[Optional[str], typer.Argument(metavar="STACK[@RELEASE]", help="A stack, stack@release, or a "
                                                  "profile path (with --check: default every stack).")] = None,
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="cuda or cpu (default: every target).")] = None,
    options: WithOpt = None,
    every: Annotated[bool, typer.Option("--all", help="Every stack, release and target.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Make nothing: fail when a lock does not fit its profile.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="With --check: a target without a lock fails too.")] = False,
) -> None:
    """Resolve every package an image installs, with hashes, as of its release's date, into a committed lock."""
    if spec is None and not (every or check):
        raise UsageError("name a stack (stackbuild lock qlora@2023.07), or pass --all or --check")
    if spec is not None and every:
        raise UsageError("--all locks every stack: name no stack with it")
    if strict and not check:
        raise UsageError("--strict goes with --check")
    selected = _lock_selection(spec, target, options or [])
    if check:
        _lock_check(selected, spec is None, strict)
        return
    settings = load_settings(ctx.obj["config"])
    failed = []
    for plan in selected:
        label = f"{plan.spec} ({plan.target.name}{''.join(f' +{o}' for o in plan.options)})"
        try:
            lock = make_lock(plan, settings)
        except LockError as exc:
            if len(selected) == 1:
                raise
            failed.append(label)
            print(f"error: {exc}", file=sys.stderr)
            continue
        path = lock_path(plan)
        write_lock(path, lock)
        sizes = ", ".join(f"{key} {len(packages)}" for key, packages in lock.groups)
        out.print(f"locked {label}: {len(lock.packages())} packages ({sizes}) -> {display_path(path)}")
        for pin in lock.git_pins():
            out.print(f"  {pin.requirement}: a git pin, pinned to its full commit; no hash can check it")
    if failed:
        raise LockError(f"{len(failed)} of {len(selected)} could not be locked: {', '.join(failed)}")


def _lock_selection(spec: str | None, target: str | None, options: list[str]) -> list:
    """The plans (read without their locks) that lock and lock --check work on."""
    if spec is None:
        names = available_stacks()
        releases: list[tuple[str, str | None]] = [(n, r) for n in names for r in load_stack(n).releases]
    else:
        name, release = split_spec(spec)
        stack = load_stack(name)
        releases = [(name, r) for r in ([release] if release else stack.releases)]
    plans = []
    for name, release in releases:
        stack = load_stack(name)
        rel = stack.release(release)
        for tname in ([target] if target else [t for t in TARGETS if t in rel.targets]):
            plans.append(plan_build(stack, rel.name, tname, options, with_lock=False))
            if not options:  # and each option the target has, on its own (`stackbuild build --with NAME`)
                plans += [plan_build(stack, rel.name, tname, [o], with_lock=False)
                          for o, spec in rel.options.items() if tname in spec.targets]
    return plans


def _lock_check(plans: list, everything: bool, strict: bool) -> None:
    bad, unlocked = [], []
    expected_files = set()
    for plan in plans:
        label = f"{plan.spec} ({plan.target.name}{''.join(f' +{o}' for o in plan.options)})"
        path = lock_path(plan)
        expected_files.add(path)
        if not path.is_file():
            unlocked.append(label)
            out.print(f"unlocked  {label}: no {display_path(path)}")
            continue
        try:
            problems = lock_problems(read_lock(path), lock_inputs(plan))
        except LockError as exc:
            problems = [str(exc)]
        if problems:
            bad.append(label)
            out.print(f"stale     {label}: " + "\n          ".join(problems))
        else:
            out.print(f"ok        {label}: {display_path(path)}")
    if everything:
        folders = {p.parent for p in expected_files}
        for orphan in sorted(f for d in folders for f in d.glob("*.txt") if f not in expected_files):
            bad.append(display_path(orphan))
            out.print(f"orphan    {display_path(orphan)}: no stack, release and target of that name")
    if bad or (strict and unlocked):
        what = [f"{len(bad)} stale or orphan: {', '.join(bad)}"] if bad else []
        what += [f"{len(unlocked)} unlocked: {', '.join(unlocked)}"] if strict and unlocked else []
        raise LockError("locks do not fit their profiles - " + "; ".join(what)
                        + " (run `stackbuild lock STACK@RELEASE --target TARGET`)")


@app.command("diff")
def diff_command(
    ctx: typer.Context,
    first: Annotated[str, typer.Argument(metavar="A", help="STACK@RELEASE, a lock file, or an image.")],
    second: Annotated[str, typer.Argument(metavar="B", help="STACK@RELEASE, a lock file, or an image.")],
    target: TargetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The package differences between two releases, two locks or two images (from their labels)."""
    settings = load_settings(ctx.obj["config"])
    engine_box: list[Engine] = []
    a = _packages_of(first, target, settings.registry, engine_box)
    b = _packages_of(second, target, settings.registry, engine_box)
    rows = package_diff(a, b)
    if as_json:
        print(json.dumps([{"package": n, "a": x, "b": y} for n, x, y in rows], indent=2))
        return
    if not rows:
        out.print(f"no differences: {len(a)} packages each")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("PACKAGE", first, second):
        table.add_column(column, overflow="fold")
    for name, x, y in rows:
        table.add_row(name, x or "-", y or "-")
    out.print(table)
    added = sum(1 for _, x, _ in rows if x is None)
    removed = sum(1 for _, _, y in rows if y is None)
    out.print(f"{len(rows) - added - removed} changed, {added} only in B, {removed} only in A")


def _packages_of(what: str, target: str | None, registry: str | None, engine_box: list) -> dict[str, str]:
    """name -> version of a lock file, a stack release's lock, or an image's io.stackbuild.lock label."""
    path = Path(what)
    if what.endswith(".txt"):
        if not path.is_file():
            raise SelectionError(f"lock file not found: {what}")
        return read_lock(path).versions()
    if looks_like_image(what):
        if not engine_box:
            engine_box.append(Engine.connect())
        labels = engine_box[0].labels(what)
        if "io.stackbuild.lock" not in labels:
            raise SelectionError(f"image {what} carries no io.stackbuild.lock label (built without a lock, or not "
                                 "by stackbuild): compare its release instead")
        return json.loads(labels["io.stackbuild.lock"])
    name, release = split_spec(what)
    plan = plan_build(load_stack(name), release, target)
    if plan.lock is None:
        raise LockError(f"{plan.spec} ({plan.target.name}) has no lock: run `stackbuild lock {plan.spec} --target "
                        f"{plan.target.name}` first")
    return plan.lock.versions()


@app.command("test")
def test_command(
    ctx: typer.Context,
    spec: ImageSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    gpus: Annotated[str, typer.Option("--gpus", help="GPUs for the container: none, all, a count, or ids 0,1.")] = "none",
    as_json: JsonOpt = False,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Also write a JUnit XML report here.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the container (it is removed by default).")] = False,
    only: Annotated[Optional[list[str]], typer.Option("--only", metavar="CHECK",
                                                      help="Run only this check (repeatable).")] = None,
) -> None:
    """Run the image's smoke checks in a network-less container; exit 0 only when none failed."""
    settings = load_settings(ctx.obj["config"])
    engine = Engine.connect()
    image = image_for(engine, spec, target, options or [], settings.registry)

    def show(result: SmokeResult) -> None:
        if not as_json:
            out.print(f"{result.status.upper():5} {result.check:24} {result.seconds:6.1f}s  {result.detail}")

    if not as_json:
        out.print(f"smoke checks of {image}")
    report = run_smoke(engine, image, gpus=gpus, keep=keep, only=only or (), on_result=show)
    if junit is not None:
        write_junit(report, junit)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    elif keep:
        out.print(f"container kept: docker exec -it {report.container} bash")
    if not report.ok:
        names = ", ".join(r.check for r in report.failed) or f"runner exit {report.exit_code}"
        found = diagnose("\n".join(r.detail for r in report.failed))
        raise SmokeError("\n".join((f"{len(report.failed)} of {len(report.results)} smoke checks failed in {image}: "
                                    f"{names}", *diagnosis_lines(found))))


@app.command("run")
def run_command(
    ctx: typer.Context,
    spec: ImageSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="none, all, a count, or ids 0,1 (default: all on "
                                                               "a cuda image, none on cpu).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Container name (default: STACK-RELEASE-TARGET).")] = None,
    volumes: Annotated[Optional[list[str]], typer.Option("--volume", "-v", metavar="SRC:DST[:ro]",
                                                         help="Mount a host path (repeatable).")] = None,
    workdir: Annotated[Optional[str], typer.Option("--workdir", "-w", help="Working directory inside.")] = None,
    env: Annotated[Optional[list[str]], typer.Option("--env", "-e", metavar="K=V", help="Set a variable (repeatable).")] = None,
    shm_size: Annotated[str, typer.Option("--shm-size", help="/dev/shm size (NCCL and DataLoader workers).")] = "16g",
    ipc_host: Annotated[bool, typer.Option("--ipc-host", help="Share the host's IPC namespace instead of --shm-size.")] = False,
    ports: Annotated[Optional[list[str]], typer.Option("--publish", "-p", metavar="[HOST:]PORT",
                                                       help="Publish a port (repeatable).")] = None,
    network: Annotated[str, typer.Option("--network", help="Container network: bridge, host or none.")] = "bridge",
    as_me: Annotated[bool, typer.Option("--as-me", help="Run as the host user (files in mounts stay yours).")] = False,
    no_hf_cache: Annotated[bool, typer.Option("--no-hf-cache", help="Do not mount the shared Hugging Face cache "
                                                                    "volume.")] = False,
) -> None:
    """Start a long-lived working container with training defaults; print how to enter it."""
    settings = load_settings(ctx.obj["config"])
    run_options = RunOptions(name=name, gpus=gpus, volumes=volumes or [], workdir=workdir, env=env or [],
                             shm_size=shm_size, ipc_host=ipc_host, ports=ports or [], network=network,
                             as_host_user=as_me, hf_cache=not no_hf_cache)
    check_options(run_options)
    engine = Engine.connect()
    image = image_for(engine, spec, target, options or [], settings.registry)
    labels = {k: v for k, v in engine.labels(image).items()
              if k in ("io.stackbuild.stack", "io.stackbuild.release", "io.stackbuild.target")}
    image_target = labels.get("io.stackbuild.target", target or "cuda")
    chosen = name or default_name(labels.get("io.stackbuild.stack", "stackbuild"),
                                  labels.get("io.stackbuild.release", "image"), image_target)
    started = run_container(engine, image, labels, chosen, image_target, run_options)
    for warning in started.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out.print(f"started {started.name} from {started.image}")
    out.print("enter it with:")
    for line in started.enter_lines():
        out.print(f"  {line}")


@app.command("shell")
def shell_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A container started by stackbuild run.")],
    shell: Annotated[str, typer.Option("--shell", help="The shell to start.")] = "bash",
) -> None:
    """An interactive shell in a running container, exactly like `docker exec -it NAME bash`."""
    argv = shell_argv(Engine.connect(), name, shell)
    sys.stdout.flush()
    os.execv(argv[0], argv)


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A container started by stackbuild run.")],
    command: Annotated[list[str], typer.Argument(metavar="-- CMD...", help="The command and its arguments.")],
    workdir: Annotated[Optional[str], typer.Option("--workdir", "-w", help="Working directory inside.")] = None,
) -> None:
    """Run a command in a running container: its output streams here, its exit code is this one's."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("give the command to run after --, e.g. stackbuild exec NAME -- python train.py")
    engine = Engine.connect()
    running(engine, name)
    stream, exit_code = engine.exec_stream(name, command, workdir)
    for stdout, stderr in stream:
        if stdout:
            sys.stdout.buffer.write(stdout)
            sys.stdout.flush()
        if stderr:
            sys.stderr.buffer.write(stderr)
            sys.stderr.flush()
    raise typer.Exit(exit_code())


@app.command("ps")
def ps_command(as_json: JsonOpt = False) -> None:
    """stackbuild's containers, running or not."""
    found = list_containers(Engine.connect())
    if as_json:
        print(json.dumps([c.__dict__ for c in found], indent=2))
        return
    if not found:
        out.print("no stackbuild containers (start one with stackbuild run STACK)")
        return
    for c in found:
        out.print(f"{c.name:32} {c.status:10} {c.stack:34} {c.image}")


@app.command("stop")
def stop_command(names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Containers to stop.")]) -> None:
    """Stop stackbuild containers (they can be started again with docker start)."""
    engine = Engine.connect()
    infos = [find(engine, n) for n in names]
    for n, _ in zip(names, infos):
        engine.stop_container(n)
        out.print(f"stopped {n}")


@app.command("rm")
def rm_command(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Containers to remove.")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove running containers too.")] = False,
) -> None:
    """Remove stackbuild containers (a running one only with --force)."""
    engine = Engine.connect()
    infos = [find(engine, n) for n in names]
    busy = [n for n, info in zip(names, infos) if (info.get("State") or {}).get("Running")]
    if busy and not force:
        raise ContainerError(f"{', '.join(busy)} still running: stackbuild stop {' '.join(busy)} first, or rm --force")
    for n in names:
        engine.remove_container(n)
        out.print(f"removed {n}")


@app.command("doctor")
def doctor_command(
    ctx: typer.Context,
    log: Annotated[Optional[str], typer.Argument(metavar="[LOG|-]", help="A log file to diagnose, or - for stdin.")] = None,
    stack: Annotated[Optional[str], typer.Option("--stack", help="STACK[@RELEASE] the log comes from (fixes for it).")] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="An image whose labels name the stack and release.")] = None,
    host: Annotated[bool, typer.Option("--host", help="Check this host: engine, NVIDIA runtime, driver, GPUs, shm, RAM, disk.")] = False,
    model: Annotated[Optional[Path], typer.Option("--model", help="Check a model folder: shard sizes vs RAM, tokenizer ids.")] = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recognise known failures in a log, or check the host or a model folder before training."""
    if log is None and not host and model is None:
        raise DoctorError("give a LOG file (or - for stdin), --host, or --model DIR")
    name, release = split_spec(stack) if stack else (None, None)
    if image is not None:
        labels = Engine.connect().labels(image)
        name, release = labels.get("io.stackbuild.stack"), labels.get("io.stackbuild.release")
        if not name:
            raise DoctorError(f"image {image} has no io.stackbuild.stack label: give --stack instead")
    loaded = load_stack(name) if name else None
    if loaded is not None:
        release = loaded.release(release).name
    report: dict = {}
    if log is not None:
        report["diagnoses"] = [d.to_dict() for d in diagnose_file(log, loaded.name if loaded else None, release)]
    if host:
        report["host"] = [c.to_dict() for c in check_host(loaded, release, target)]
    if model is not None:
        report["model"] = [c.to_dict() for c in check_model(model)]
    if as_json:
        print(json.dumps(report, indent=2))
        return
    if "diagnoses" in report:
        source = "standard input" if log == "-" else log
        if not report["diagnoses"]:
            out.print(f"no known failure recognised in {source}")
        for item in report["diagnoses"]:
            _print_diagnosis(item)
    for section in ("host", "model"):
        for check in report.get(section, []):
            fix = f"\n        fix: {check['fix']}" if check.get("fix") and check["status"] != "ok" else ""
            out.print(f"{check['status'].upper():7} {check['name']:18} {check['detail']}{fix}")


def _print_diagnosis(item: dict) -> None:
    out.print(Text(f"{item['id']}", style="bold"), f"({item['confidence']:.2f}) {item['title']}")
    out.print(f"  line {item['first_line']}" + (f" (also {', '.join(map(str, item['lines'][1:6]))})"
                                                if len(item["lines"]) > 1 else "") + ":")
    for line in item["excerpt"]:
        marker = ">" if line["line"] == item["first_line"] else " "
        out.print(f"  {marker}{line['line']:>6} | {line['text']}")
    out.print(f"  cause: {item['cause']}")
    out.print(f"  fix:   {item['fix']}")


@app.command("schema")
def schema_command() -> None:
    """Print the JSON schema of a stack profile."""
    print(json.dumps(profile_schema(), indent=2))


def main() -> None:
    """Console-script entry point."""
    app()
