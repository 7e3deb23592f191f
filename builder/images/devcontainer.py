"""`stackbuild devcontainer`: a Dev Containers configuration (.devcontainer/devcontainer.json) for a built image.

The file names the image by its content tag (render/identity.py: exactly this content, the name
`build` gives it) and sets the container up as `stackbuild run` does, from the same place
(containers.training_setup): every GPU of a GPU target (``hostRequirements.gpu``; a count or ids
as ``--gpus`` in ``runArgs``), /dev/shm or the host's IPC, the memlock and stack limits, an init
process, the Hugging Face cache on its named volume, the environment, and the io.stackbuild.container
label (so `stackbuild ps`, `shell` and `exec` see the container). The user and the folder the
workspace is mounted at are the image's own (its USER and WORKDIR), as with `run`.

What the Dev Containers tools read (the spec's devcontainer.json reference): ``image``, ``runArgs``
(extra `docker run` arguments), ``init``, ``mounts``, ``containerEnv``, ``containerUser`` and
``remoteUser``, ``workspaceMount`` and ``workspaceFolder``, ``overrideCommand`` (their own wait
loop instead of the image's CMD, a bash that would exit), ``hostRequirements.gpu`` (the tool adds
``--gpus all`` where the engine has the NVIDIA runtime) and ``customizations``.

Rendering is pure (``render_devcontainer``). Two steps ask the engine: finding the image by its
content tag, and a probe container that learns which limits the engine may set: a rootless or
sandboxed engine refuses memlock=-1, `run` then starts without it and says so, and so does this
file (a `devcontainer up` with a refused limit fails to start).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..engine.api import Engine
from ..errors import RenderError, UsageError
from ..plan import labels as schema
from ..plan.build_plan import VENV
from ..profile.spec import split_spec
from ..render.dockerfile import prepare
from ..safety.atomic import write_atomic
from ..safety.files import InputRefused, read_text
from ..safety.printable import printable
from .containers import LABEL, RunOptions, TrainingSetup, start_training, training_setup
from .lookup import built_image

FOLDER = ".devcontainer"
FILE = "devcontainer.json"
PROBE_LIFETIME_S = 60  # a probe left by a killed run stops by itself (and `stackbuild test` sweeps it)
MAX_EXISTING = 1024 * 1024  # an existing devcontainer.json larger than this is not one to compare


@dataclass(frozen=True)
class DevcontainerRequest:
    """What `stackbuild devcontainer` was asked for."""

    stack: str  # STACK[@RELEASE] or a profile path
    target: str | None
    options: tuple[str, ...]
    folder: Path  # the project folder: the file goes to FOLDER/.devcontainer/devcontainer.json
    force: bool = False
    run: RunOptions = field(default_factory=RunOptions)  # run's options, with run's defaults


@dataclass(frozen=True)
class ImageFacts:
    """What the file needs of the image itself: its content-tag name, user and working folder."""

    name: str
    user: str  # the image's USER ('' for root)
    workdir: str  # the image's WORKDIR ('' for none)


@dataclass(frozen=True)
class Written:
    path: Path
    image: str
    label: str  # 'qlora@2026.11 (cpu)'
    changed: bool  # False: the file was already exactly this
    warnings: tuple[str, ...] = ()


def run_args(setup: TrainingSetup) -> list[str]:
    """The `docker run` arguments of ``setup`` that devcontainer.json has no property of its own for."""
    args = []
    if setup.network != "bridge":  # bridge is the engine's default
        args.append(f"--network={setup.network}")
    args.append("--ipc=host" if setup.ipc_host else f"--shm-size={setup.shm_size}")
    args += [f"--ulimit={name}={value}:{value}" for name, value in sorted(setup.ulimits.items())]
    gpus = setup.gpus
    if gpus is not None and gpus.count != -1:  # every GPU is hostRequirements.gpu
        args.append(f"--gpus={gpus.count}" if gpus.count is not None else f'--gpus="device={gpus.devices}"')
    args.append(f"--label={LABEL}=1")
    return args


def render_devcontainer(image: ImageFacts, label: str, setup: TrainingSetup) -> dict:
    """devcontainer.json's content for ``image`` set up as ``setup`` says; pure."""
    if setup.binds or setup.ports:
        raise UsageError("a devcontainer takes no host paths or published ports from stackbuild: add them to "
                         "devcontainer.json's mounts and forwardPorts")
    if setup.gpus is not None and tuple(setup.gpus.capabilities) != ("gpu",):
        raise UsageError(f"the GPU request asks for {', '.join(setup.gpus.capabilities)}: Dev Containers ask Docker for "
                         "GPUs only through --gpus (capability gpu)")
    config: dict = {"name": label, "image": image.name, "runArgs": run_args(setup), "init": setup.init}
    if setup.volumes:
        config["mounts"] = [{"type": "volume", "source": volume, "target": path}
                            for volume, path in sorted(setup.volumes.items())]
    if setup.env:
        config["containerEnv"] = dict(sorted(setup.env.items()))
    user = setup.user or image.user or "root"
    config["containerUser"] = config["remoteUser"] = user
    workdir = setup.workdir or image.workdir
    if workdir:
        # the project is mounted where the image's own work folder is (WORKDIR), as run's shell starts there
        config["workspaceMount"] = f"source=${{localWorkspaceFolder}},target={workdir},type=bind"
        config["workspaceFolder"] = workdir
    config["overrideCommand"] = True
    if setup.gpus is not None and setup.gpus.count == -1:
        config["hostRequirements"] = {"gpu": True}
    config["customizations"] = {"vscode": {"settings": {"python.defaultInterpreterPath": f"{VENV}/bin/python"},
                                           "extensions": ["ms-python.python"]}}
    return config


def devcontainer_text(config: dict) -> str:
    return json.dumps(config, indent=2) + "\n"


def accepted_limits(engine: Engine, image: str, setup: TrainingSetup) -> tuple[dict[str, int], tuple[str, ...]]:
    """The limits of ``setup`` this engine sets, learnt as `run` learns them: a short-lived container of
    ``image`` (no network, no GPU, no volume) started with them, and removed again; with the warnings
    for any it refused."""
    probe = replace(setup, gpus=None, network="none", volumes={}, binds=[], ports={}, env={})
    name = f"stackbuild-devcontainer-probe-{uuid.uuid4().hex[:10]}"
    container, limits, warnings = start_training(engine, image, name, {schema.SMOKE: "1"}, probe,
                                                 lifetime_s=PROBE_LIFETIME_S)
    engine.remove_container(container)
    warnings = tuple(w.replace("started without", "written without") for w in warnings)
    return limits, warnings


def image_facts(engine: Engine, name: str) -> ImageFacts:
    config = (engine.image(name) or {}).get("Config") or {}
    return ImageFacts(name, str(config.get("User") or ""), str(config.get("WorkingDir") or ""))


def devcontainer_path(folder: Path) -> Path:
    """FOLDER/.devcontainer/devcontainer.json, once FOLDER is an existing folder and .devcontainer is none
    or a folder; RenderError naming the fix otherwise."""
    path = folder / FOLDER / FILE
    shown = printable(str(path))
    try:
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise RenderError(f"cannot write {shown}: {printable(str(folder))} {what} (give --output the project "
                              "folder the devcontainer is for)")
        if os.path.lexists(folder / FOLDER) and not (folder / FOLDER).is_dir():
            raise RenderError(f"cannot write {shown}: {printable(str(folder / FOLDER))} is not a folder")
    except OSError as exc:  # a name too long, a folder that may not be read
        raise RenderError(f"cannot write {shown}: {exc.strerror or exc}") from None
    return path


def write_devcontainer(folder: Path, text: str, force: bool) -> tuple[Path, bool]:
    """Write ``text`` to FOLDER/.devcontainer/devcontainer.json atomically: (the path, whether it changed).

    FOLDER must exist; .devcontainer is made when missing (and removed again when the write fails).
    An existing file that says something else is replaced only with ``force``."""
    path = devcontainer_path(folder)
    shown = printable(str(path))
    if path.exists() or path.is_symlink():
        try:
            existing = read_text(path, MAX_EXISTING)
        except (InputRefused, OSError, UnicodeDecodeError) as exc:
            raise RenderError(f"cannot write {shown}: the file there cannot be read ({exc}); move it away") from None
        if existing == text:
            return path, False
        if not force:
            raise RenderError(f"{shown} already exists and says something else: keep it, move it away, or give "
                              "--force to replace it")
    made = not (folder / FOLDER).exists()
    try:
        write_atomic(path, text, RenderError, make_folder=True)
    except BaseException:
        if made:
            try:
                (folder / FOLDER).rmdir()
            except OSError:
                pass
        raise
    return path, True


def make_devcontainer(request: DevcontainerRequest, registry: str | None, connect: Callable[[], Engine]) -> Written:
    """Find the built image of the request's plan, learn which limits the engine sets, and write the file."""
    name, release = split_spec(request.stack)
    context = prepare(name, release, request.target, list(request.options))
    setup = training_setup(context.plan.target.name, request.run)  # bad options fail before the engine is asked
    devcontainer_path(request.folder)  # and so does a folder the file cannot go into
    engine = connect()
    try:
        image = image_facts(engine, built_image(engine, context, registry, request.stack))
        limits, warnings = accepted_limits(engine, image.name, setup)
    finally:
        engine.close()
    text = devcontainer_text(render_devcontainer(image, context.plan.label, replace(setup, ulimits=limits)))
    path, changed = write_devcontainer(request.folder, text, request.force)
    return Written(path, image.name, context.plan.label, changed, warnings)

