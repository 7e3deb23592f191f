"""The `stackbuild` command line: parse options, call one library function, print (builder/cli/output.py).

Errors: every ``StackbuildError`` is caught in one place (``output.ErrorBoundary``) and printed
as ``error: …`` on stderr with its exit code.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__
from ..engine import connect as engines
from . import output
from ..plan import labels as schema
from ..profile import targets
from ..images.build import build_image, parse_build_args
from .catalog import describe_stack, list_stacks, profile_schema
from ..config import config_path
from ..images.containers import (RunOptions, check_options, default_name, exec_in, find, find_each, list_containers,
                                 run_container, running, shell_argv)
from ..doctor.diagnose import EngineInfo, check_host, check_model, diagnose, diagnose_file, diagnosis_lines
from ..errors import EXIT_CODES, ContainerError, DoctorError, LockError, SmokeError, UsageError
from ..images.lookup import image_of, label_identity, matches_profile, packages_of, release_of, stack_of
from ..lock.resolution import check_locks, lock_check_error, lock_each, lock_selection, lock_usage, resolve_checks
from ..lock.format import package_diff
from .output import out, print_json
from ..safety.printable import printable, printable_lines
from ..safety.credentials import redact
from ..profile.load import load_stack
from ..supply.publish import attachments, push_and_attach
from ..images.registry import describe_image, pull_prebuilt, require_registry
from ..images.signing import trusted_keys
from .devcontainer import devcontainer_app
from .launch import launch_app
from .supply import supply_app
from .propose import propose_app
from .options import (ImageSpecArg, JsonOpt, NameArg, NamesArg, ProgressJsonOpt, QuietOpt, RegistryOpt, StackSpecArg,
                      TargetOpt, WithOpt, WorkdirOpt)
from .options import settings as _settings
from ..render.dockerfile import prepare, write_rendered
from ..safety.paths import user_path
from ..smoke.run import SmokeResult, run_smoke, write_junit
from ..smoke.training import run_training
from ..profile.spec import split_spec
from ..engine.references import checked_ref


app = typer.Typer(
    cls=output.ErrorBoundary,
    name="stackbuild",
    help="Curated, pinned Docker images for LLM training stacks that work the first time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog="Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
)



def _version(value: bool) -> None:
    if value:
        print(f"stackbuild {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    config: Annotated[
        Optional[Path], typer.Option("--config", readable=False, help="Settings file (default: $STACKBUILD_CONFIG or "
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
    print_json(rows) if as_json else output.print_stack_list(rows)


@app.command("show")
def show_command(spec: StackSpecArg, as_json: JsonOpt = False) -> None:
    """Print a stack's pins, build flags, patches, fixes and targets (every release, or one)."""
    name, release = split_spec(spec)
    info = describe_stack(load_stack(name), release)
    print_json(info) if as_json else output.print_stack(info)


@app.command("render")
def render_command(
    spec: StackSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    dockerfile: Annotated[
        Optional[str], typer.Option("--output", "-o", help="Write the Dockerfile to this file ('-': stdout).")
    ] = None,
    context: Annotated[
        Optional[Path], typer.Option("--context", readable=False, help="Write the whole build context into this new or empty folder.")
    ] = None,
) -> None:
    """Render the Dockerfile of a stack (pure: no Docker, no network)."""
    name, release = split_spec(spec)
    built = prepare(name, release, target, options or [])
    write_rendered(built, None if dockerfile == "-" else dockerfile, context)
    if dockerfile == "-" or (dockerfile is None and context is None):
        sys.stdout.write(built.dockerfile)


app.add_typer(supply_app)  # sbom, audit
app.add_typer(launch_app)  # launch
app.add_typer(devcontainer_app)  # devcontainer
app.add_typer(propose_app)  # propose
config_app = typer.Typer(help="Show the settings in force.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print every setting, its value (credentials masked) and where it came from."""
    settings = _settings(ctx)
    rows = [(name, f"{value}: {engines.describe(settings.engine, settings.builder)}" if name == "engine" else value,
             source) for name, value, source in settings.shown()]
    if as_json:
        print_json({name: {"value": value, "source": source} for name, value, source in rows})
        return
    output.print_settings(rows, config_path(ctx.obj["config"]))


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
    engine: Annotated[Optional[str], typer.Option("--engine", help="buildkit (docker buildx), classic, or auto: "
                                                  "buildkit where docker buildx answers (setting: engine).")] = None,
    builder: Annotated[Optional[str], typer.Option("--builder", help="A buildx builder by name (remote, "
                                                   "docker-container, kubernetes drivers); BuildKit only.")] = None,
    cache_from: Annotated[Optional[str], typer.Option("--cache-from", help="Reuse a registry cache: an image "
                                                      "reference, or 'registry' for <registry>/<stack>:cache-"
                                                      "<release>-<target> (BuildKit).")] = None,
    cache_to: Annotated[Optional[str], typer.Option("--cache-to", help="Export the build's cache there (same "
                                                    "forms as --cache-from; BuildKit).")] = None,
    compression: Annotated[Optional[str], typer.Option("--compression", help="gzip, or zstd: layers stored and "
                                                       "pushed as zstd (BuildKit on containerd's image store; "
                                                       "setting: compression).")] = None,
    quiet: QuietOpt = False,
    as_json: ProgressJsonOpt = False,
) -> None:
    """Reuse, pull or build a stack's image: a registry's prebuilt image of exactly this content, else a build."""
    settings = _settings(ctx, build_network=network, registry=registry, engine=engine, builder=builder,
                         compression=compression)
    args = parse_build_args(build_args or [])
    name, release = split_spec(spec)
    context = prepare(name, release, target, options or [])
    with output.progress(quiet, as_json) as reporter:
        result = build_image(context, settings, extra_tags=tuple(tags or ()), nocache=no_cache, pull=pull,
                             use_registry=not no_pull, buildargs=args, cache_from=cache_from, cache_to=cache_to,
                             on_event=reporter)
    if as_json:
        print_json({"event": "result", **result.as_dict()}, lines=True)
    else:
        output.print_build_result(result)


def _registry_job(ctx: typer.Context, command: str, spec: str, target: str | None, options: list[str] | None,
                  registry: str | None, quiet: bool, as_json: bool, move) -> tuple:
    """pull and push: the stack's build context, the registry (required) and the engine, then ``move``
    with progress."""
    chosen = require_registry(_settings(ctx, registry=registry).registry, command)
    name, release = split_spec(spec)
    context, engine = prepare(name, release, target, options or []), engines.connect()
    with output.progress(quiet, as_json) as reporter:
        return move(engine, context, chosen, reporter)


@app.command("pull")
def pull_command(ctx: typer.Context, spec: StackSpecArg, target: TargetOpt = None, options: WithOpt = None,
                 registry: RegistryOpt = None, quiet: QuietOpt = False, as_json: ProgressJsonOpt = False) -> None:
    """Pull the prebuilt image the local profile would build (its content tag), with per-layer progress; with
    verify_keys set, only an image signed by one of them."""
    move = functools.partial(pull_prebuilt, keys=(keys := trusted_keys(_settings(ctx, registry=registry).verify_keys)))
    ref, pulled = _registry_job(ctx, "pull", spec, target, options, registry, quiet, as_json, move)
    if as_json:
        print_json({"event": "result", "image": ref.moving, "content_tag": ref.immutable, "id": pulled.image_id,
                    "content_hash": ref.content_hash}, lines=True)
    else:
        out.print(f"pulled {ref.immutable} = {ref.moving} (labels match the profile{', signed' if keys else ''})")


@app.command("push")
def push_command(ctx: typer.Context, spec: StackSpecArg, target: TargetOpt = None, options: WithOpt = None,
                 registry: RegistryOpt = None, quiet: QuietOpt = False, as_json: ProgressJsonOpt = False) -> None:
    """Push the built image of a stack under its content tag and its moving tag, with its SBOM and provenance
    beside it, signed with the signing_key setting."""
    move = functools.partial(push_and_attach, settings=_settings(ctx, registry=registry))
    output.print_pushed(*_registry_job(ctx, "push", spec, target, options, registry, quiet, as_json, move), as_json)


@app.command("inspect")
def inspect_command(ctx: typer.Context, spec: ImageSpecArg, target: TargetOpt = None, options: WithOpt = None,
                    registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """What an image says about itself (its labels): stack, release, target, pins, fixes, content hash."""
    settings = _settings(ctx, registry=registry)
    engine = engines.connect()
    image = image_of(engine, spec, target, options or [], settings.registry)
    info = describe_image(engine, image)
    info["matches_profile"] = matches_profile(engine, spec if image != spec else None, info, settings.registry)
    info["attachments"] = attachments(engine, image, settings)  # what push put beside it in a registry
    print_json(info) if as_json else output.print_image(info)


@app.command("lock")
def lock_command(
    ctx: typer.Context,
    spec: Annotated[Optional[str], typer.Argument(metavar="STACK[@RELEASE]", help="A stack, stack@release, or a "
                                                  "profile path (with --check: default every stack).")] = None,
    target: Annotated[Optional[str], typer.Option("--target", "-t", help=f"{' or '.join(targets.NAMES)} (default: "
                                                  "every target).")] = None,
    options: WithOpt = None,
    every: Annotated[bool, typer.Option("--all", help="Every stack, release and target.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Make nothing: fail when a lock does not fit its profile.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="With --check: a target without a lock fails too.")] = False,
    resolve: Annotated[bool, typer.Option("--resolve", help="With --check: resolve each lock again from the index "
                                          "and fail when it is not what its inputs give (a forged lock).")] = False,
    base: Annotated[Optional[str], typer.Option("--base", metavar="REV", help="With --resolve: the git revision "
                                                "the change under check started from (default: HEAD for an edited "
                                                "lock, else the commit before the lock's last change).")] = None,
    upgrade: Annotated[bool, typer.Option("--upgrade", help="Resolve afresh: no preference for the previous "
                                          "lock's versions.")] = False,
    upgrade_packages: Annotated[Optional[list[str]], typer.Option("--upgrade-package", metavar="NAME",
                                help="Let NAME move to its newest version as of the date (repeatable).")] = None,
) -> None:
    """Resolve every package an image installs, with hashes, as of its release's date, into a committed lock.

    Locking again prefers the previous lock's versions: only what a changed pin strictly requires
    moves (--upgrade and --upgrade-package move more on purpose), and lock prints what moved.
    """
    lock_usage(spec, every, check, strict, resolve, upgrade, upgrade_packages or [], base)
    name, release = split_spec(spec) if spec else (None, None)
    selected = lock_selection(name, release, target, options or [])
    if check:
        checks = check_locks(selected, spec is None)
        checks = resolve_checks(selected, checks, _settings(ctx), base=base) if resolve else checks
        for item in checks:
            output.print_lock_check(item, user_path(item.path))
        if failed := lock_check_error(checks, strict):
            raise failed
        return
    lock_each(selected, _settings(ctx), upgrade, upgrade_packages or [],
              lambda plan, relocked: output.print_locked(plan.label, relocked, user_path(relocked.path)),
              lambda exc: print(f"error: {printable_lines(redact(str(exc)))}", file=sys.stderr))


@app.command("diff")
def diff_command(
    first: Annotated[str, typer.Argument(metavar="A", help="STACK@RELEASE, a lock file, or an image.")],
    second: Annotated[str, typer.Argument(metavar="B", help="STACK@RELEASE, a lock file, or an image.")],
    target: TargetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The package differences between two releases, two locks or two images (from their labels)."""
    engine = functools.cache(engines.connect)  # connected once, and only when an image is named
    a, b = packages_of(first, target, engine), packages_of(second, target, engine)
    rows = package_diff(a, b)
    if as_json:
        print_json([{"package": n, "a": x, "b": y} for n, x, y in rows])
    else:
        output.print_package_diff(rows, first, second, len(a))


@app.command("test")
def test_command(
    ctx: typer.Context,
    spec: ImageSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    gpus: Annotated[str, typer.Option("--gpus", help="GPUs for the container: none, all, a count, or ids 0,1.")] = "none",
    as_json: JsonOpt = False,
    junit: Annotated[Optional[Path], typer.Option("--junit", readable=False, help="Also write a JUnit XML report here.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the container (it is removed by default).")] = False,
    only: Annotated[Optional[list[str]], typer.Option("--only", metavar="CHECK",
                                                      help="Run only this check or training entry (repeatable).")] = None,
    training: Annotated[bool, typer.Option("--training", help="Run the release's training entries (today's training "
                                                               "code, on a tiny model) instead of the smoke checks.")] = False,
    steps: Annotated[int, typer.Option("--steps", help="Training steps of each entry (with --training).")] = 2,
) -> None:
    """Run the image's smoke checks (or, with --training, its release's training entries) in a network-less
    container; exit 0 only when none failed."""
    targets.check_gpus(gpus)
    engine = engines.connect()
    logs: dict[str, str] = {}

    def show(result: SmokeResult) -> None:
        if not as_json:
            out.print(f"{result.status.upper():5} {result.check:24} {result.seconds:6.1f}s  {result.detail}")

    if training:
        image, release, target_name = release_of(engine, spec, target, options or [], _settings(ctx).registry)
        if not as_json:
            out.print(f"training entries of {release.name} ({target_name}) in {image}")
        report, logs = run_training(engine, image, release, target_name, only=only or (), steps=steps, gpus=gpus,
                                    keep=keep, on_result=show)
    else:
        image = image_of(engine, spec, target, options or [], _settings(ctx).registry)
        if not as_json:
            out.print(f"smoke checks of {image}")
        report = run_smoke(engine, image, gpus=gpus, capabilities=targets.entry_or_default(target).gpu_capabilities,
                           keep=keep, only=only or (), on_result=show)
    if junit is not None:
        write_junit(report, junit)
    output.print_smoke_end(report, as_json)
    if not report.ok:
        names = ", ".join(r.check for r in report.failed) or f"runner exit {report.exit_code}"
        found = diagnose("\n".join([r.detail for r in report.failed] + [logs.get(r.check, "") for r in report.failed]))
        kept = output.write_training_logs(image, {r.check: logs[r.check] for r in report.failed if r.check in logs})
        what = "training entries" if training else "smoke checks"
        raise SmokeError("\n".join((f"{len(report.failed)} of {len(report.results)} {what} failed in {image}: "
                                    f"{names}", *kept, *diagnosis_lines(found))))


@app.command("run")
def run_command(
    ctx: typer.Context,
    spec: ImageSpecArg,
    target: TargetOpt = None,
    options: WithOpt = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="none, all, a count, or ids 0,1 (default: all on "
                                                               "a GPU target's image, none on cpu).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Container name (default: STACK-RELEASE-TARGET).")] = None,
    volumes: Annotated[Optional[list[str]], typer.Option("--volume", "-v", metavar="SRC:DST[:ro]",
                                                         help="Mount a host path (repeatable).")] = None,
    workdir: WorkdirOpt = None,
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
    run_options = RunOptions(name=name, gpus=gpus, volumes=volumes or [], workdir=workdir, env=env or [],
                             shm_size=shm_size, ipc_host=ipc_host, ports=ports or [], network=network,
                             as_host_user=as_me, hf_cache=not no_hf_cache)
    check_options(run_options)
    engine = engines.connect()
    image = image_of(engine, spec, target, options or [], _settings(ctx).registry)
    labels = label_identity(engine.labels(image))
    image_target = labels.get(schema.TARGET, target or targets.DEFAULT)
    chosen = name or default_name(labels.get(schema.STACK, "stackbuild"), labels.get(schema.RELEASE, "image"),
                                  image_target)
    started = run_container(engine, image, labels, chosen, image_target, run_options)
    for warning in started.warnings:
        output.warn(warning)
    out.print(f"started {started.name} from {started.image}")
    out.print("enter it with:")
    for line in started.enter_lines():
        out.print(f"  {line}")


@app.command("shell")
def shell_command(
    name: NameArg,
    shell: Annotated[str, typer.Option("--shell", help="The shell to start.")] = "bash",
) -> None:
    """An interactive shell in a running container, exactly like `docker exec -it NAME bash`."""
    argv = shell_argv(engines.connect(), name, shell)
    sys.stdout.flush()
    os.execv(argv[0], argv)


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_command(
    name: NameArg,
    command: Annotated[list[str], typer.Argument(metavar="-- CMD...", help="The command and its arguments.")],
    workdir: WorkdirOpt = None,
) -> None:
    """Run a command in a running container: its output streams here, its exit code is this one's."""
    if command and command[0] == "--":
        command = command[1:]
    if not command or not command[0].strip():
        raise UsageError("give the command to run after --, e.g. stackbuild exec NAME -- python train.py")
    def write(stdout: bytes | None, stderr: bytes | None) -> None:
        for data, to in ((stdout, sys.stdout), (stderr, sys.stderr)):
            if data:
                to.buffer.write(data)
                to.flush()

    raise typer.Exit(exec_in(engines.connect(), name, command, workdir, write, output.warn))


@app.command("ps")
def ps_command(as_json: JsonOpt = False) -> None:
    """stackbuild's containers, running or not."""
    found = list_containers(engines.connect())
    if as_json:
        print_json([c.__dict__ for c in found])
    elif not found:
        out.print("no stackbuild containers (start one with stackbuild run STACK)")
    else:
        output.print_table(("NAME", "STATUS", "STACK", "IMAGE"), [(c.name, c.status, c.stack, c.image) for c in found])


@app.command("stop")
def stop_command(names: NamesArg) -> None:
    """Stop stackbuild containers (they can be started again with docker start)."""
    engine = engines.connect()
    for n, _ in find_each(engine, names):  # every name is a stackbuild container before any is stopped
        engine.stop_container(n)
        out.print(f"stopped {n}")


@app.command("rm")
def rm_command(
    names: NamesArg,
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove running containers too.")] = False,
) -> None:
    """Remove stackbuild containers (a running one only with --force)."""
    engine = engines.connect()
    found = find_each(engine, names)  # a container named twice (by name and id) is removed once
    busy = [n for n, info in found if (info.get("State") or {}).get("Running")]
    if busy and not force:
        raise ContainerError(f"{', '.join(busy)} still running: stackbuild stop {' '.join(busy)} first, or rm --force")
    for n, _ in found:
        engine.remove_container(n)
        out.print(f"removed {n}")


@app.command("doctor")
def doctor_command(
    log: Annotated[Optional[str], typer.Argument(metavar="[LOG|-]", help="A log file to diagnose, or - for stdin.")] = None,
    stack: Annotated[Optional[str], typer.Option("--stack", help="STACK[@RELEASE] the log comes from (fixes for it).")] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="An image whose labels name the stack and release.")] = None,
    host: Annotated[bool, typer.Option("--host", help="Check this host: engine, NVIDIA runtime, driver, GPUs, shm, RAM, disk.")] = False,
    model: Annotated[Optional[Path], typer.Option("--model", readable=False, help="Check a model folder: shard sizes vs RAM, tokenizer ids.")] = None,
    target: TargetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recognise known failures in a log, or check the host or a model folder before training."""
    if log is None and not host and model is None:
        raise DoctorError("give a LOG file (or - for stdin), --host, or --model DIR")
    name, release = split_spec(stack) if stack else (None, None)
    if image is not None:
        name, release = stack_of(engines.connect().labels(checked_ref(image)), image)
        if not name:
            raise DoctorError(f"image {printable(image)} has no {schema.STACK} label: give --stack instead")
    loaded = load_stack(name) if name else None
    if loaded is not None:
        release = loaded.release(release).name
    report: dict = {}
    if log is not None:
        report["diagnoses"] = [d.to_dict() for d in diagnose_file(log, loaded.name if loaded else None, release)]
    if host:
        targets.check_name(target)
        probe = lambda: EngineInfo(**engines.host_info())  # noqa: E731 - doctor asks through the engine package
        report["host"] = [c.to_dict() for c in check_host(loaded, release, target, engine_probe=probe)]
    if model is not None:
        report["model"] = [c.to_dict() for c in check_model(model)]
    if as_json:
        print_json(report)
        return
    if "diagnoses" in report:
        if not report["diagnoses"]:
            out.print(f"no known failure recognised in {'standard input' if log == '-' else printable(log)}")
        for item in report["diagnoses"]:
            output.print_diagnosis(item)
    output.print_checks(report.get("host", []) + report.get("model", []))


@app.command("schema")
def schema_command() -> None:
    """Print the JSON schema of a stack profile."""
    print_json(profile_schema())


def main() -> None:
    """Console-script entry point."""
    app()
