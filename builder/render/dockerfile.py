"""Render a BuildPlan into a BuildContext: the Dockerfile text plus the files it copies.

Pure: no Docker, no network, no clock. The same plan renders to the same bytes, which is what
makes golden files and content tags meaningful.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from .guard import Composed, check_dockerfile, checked_value, skeleton_value
from ..errors import RenderError
from ..safety.atomic import write_atomic, write_folder_atomic
from ..safety.printable import printable, visible
from ..lock.format import Lock, LockedPackage
from ..plan.build_plan import HELD, STACKBUILD_DIR, VENV, BuildPlan, plan_for
from ..safety.paths import templates_dir
from ..safety.files import InputRefused, check_output_path


@dataclass(frozen=True)
class BuildContext:
    """Everything `docker build` receives: the Dockerfile and the files beside it."""

    plan: BuildPlan
    dockerfile: str
    files: tuple[tuple[str, bytes], ...]  # (relative path, content), sorted by path

    def write(self, directory: Path) -> None:
        """Write the context into an empty or new directory."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Dockerfile").write_text(self.dockerfile, encoding="utf-8")
        for rel, content in self.files:
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def dockerfile_string(value: str) -> str:
    """A double-quoted Dockerfile word: escapes quotes, backslashes and `$` (LABEL/ENV expand it)."""
    if any(ord(c) < 0x20 for c in value):
        raise RenderError(f"refusing to render a control character into the Dockerfile: {value!r}")
    # a bidi override or zero-width character would show a reviewer another text than the one built:
    # the value carries its escape instead (a label reads "\\u202e", never the invisible character)
    escaped = visible(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def shell_word(value: str) -> str:
    """One shell word, quoted only when it needs to be."""
    if any(ord(c) < 0x20 for c in value) or visible(value) != value:
        raise RenderError(f"refusing to render a control or invisible character into a RUN line: "
                          f"{printable(value)}")
    return shlex.quote(value)


def comment_text(value: object) -> str:
    """Free text (a title, a path) for a Dockerfile comment: one line, control characters escaped."""
    return printable(str(value))


@lru_cache(maxsize=2)
def _environment(skeleton: bool = False) -> jinja2.Environment:
    """The strict Jinja environment; ``skeleton`` replaces every value by a placeholder (dockerguard)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=skeleton_value if skeleton else checked_value,
    )
    env.filters["comment"] = comment_text
    env.filters["dq"] = dockerfile_string
    env.filters["sh"] = shell_word
    env.filters["composed"] = Composed
    return env


@dataclass(frozen=True)
class LockLayer:
    """The lock files one Dockerfile layer copies and installs (context paths, e.g. lock/2-torch.txt)."""

    path: str | None  # its hash-checked packages
    git: str | None = None  # its git pins: pinned to a commit, which no hash can check
    compiled: str | None = None  # a compiled layer's package built from source, installed on its own
    compiled_git: bool = False

    @property
    def files(self) -> list[str]:
        return [f for f in (self.path, self.git, self.compiled) if f]


LAYER_NUMBER = {"bootstrap": 1, "torch": 2, "toolkit": 2, "packages": 4, "last": 5}


def installs_with_uv(lock: Lock | None) -> bool:
    """Whether the lock's hash-checked sections after [bootstrap] are installed by uv (partials/hashed.j2).

    They are when [bootstrap] has uv: pip installs that section, uv from it then installs the rest,
    faster than pip (bench/uv_vs_pip.py). A lock without uv (a user's own) is installed by pip.
    """
    return lock is not None and any(p.name == "uv" for key, packages in lock.groups if key == "bootstrap"
                                    for p in packages)


def lock_layers(lock: Lock | None) -> tuple[dict[str, LockLayer], dict[str, bytes]]:
    """Each locked layer's files, by the lock's section key, and those files' content."""
    if lock is None:
        return {}, {}
    layers: dict[str, LockLayer] = {}
    files: dict[str, bytes] = {}
    uv = installs_with_uv(lock)

    def put(name: str, key: str, what: str, packages: list[LockedPackage]) -> str | None:
        if not packages:
            return None
        # nothing stack-specific here: the same section makes the same file, so layers are shared
        hashed = not what.startswith("git")
        tool = "uv pip" if uv and hashed and what == "the packages" and key != "bootstrap" else "pip"
        head = (f"# {what} of a stackbuild lock's [{key}] section, installed by one layer with "
                f"{tool} install --no-deps" + (" --require-hashes" if hashed else "") + "\n")
        files[f"lock/{name}.txt"] = (head + "".join(p.text() for p in packages)).encode()
        return f"lock/{name}.txt"

    for key, packages in lock.groups:
        if key.startswith("compiled:"):
            package = key.split(":", 1)[1]
            own = [p for p in packages if p.name == package]
            rest = [p for p in packages if p.name != package]
            name = f"3-{package}"
            layers[key] = LockLayer(put(f"{name}-deps", key, "the packages", [p for p in rest if not p.is_git]),
                                    put(f"{name}-git", key, "git pins", [p for p in rest if p.is_git]),
                                    put(name, key, "the compiled package", own), any(p.is_git for p in own))
        else:
            name = f"{LAYER_NUMBER[key]}-{key}"
            layers[key] = LockLayer(put(name, key, "the packages", [p for p in packages if not p.is_git]),
                                    put(f"{name}-git", key, "git pins", [p for p in packages if p.is_git]))
    return layers, files


def dialect_mounts(site_secret: str | None = None, cache_mounts: tuple[tuple[str, str], ...] = ()) -> str:
    """What an engine's dialect adds to each network step's RUN: its secret and cache mounts ("" for none)."""
    flags = [f"--mount=type=secret,id={site_secret},required=false"] if site_secret else []
    flags += [f"--mount=type=cache,id={cache},target={target}" for cache, target in cache_mounts]
    return "".join(f"{flag} " for flag in flags)


def render_dockerfile(plan: BuildPlan, *, site_secret: str | None = None,
                      cache_mounts: tuple[tuple[str, str], ...] = ()) -> str:
    """The Dockerfile text of a plan, refused unless its instructions are exactly the plan's.

    ``site_secret`` and ``cache_mounts`` are an engine's dialect (its ``Dialect``): BuildKit's network
    steps mount them; the default, none, is the classic Dockerfile that goldens and content tags hold.
    """
    try:
        values = dict(plan=plan, venv=VENV, sbdir=STACKBUILD_DIR, held=HELD, locked=lock_layers(plan.lock)[0],
                      uv=installs_with_uv(plan.lock), mounts=dialect_mounts(site_secret, cache_mounts))
        text = _environment().get_template("Dockerfile.j2").render(**values)
        skeleton = _environment(skeleton=True).get_template("Dockerfile.j2").render(**values)
    except jinja2.TemplateError as exc:
        raise RenderError(f"template error while rendering {plan.spec} ({plan.target.name}): {exc}") from None
    check_dockerfile(text, skeleton, f"{plan.spec} ({plan.target.name})")
    return text


def render_context(plan: BuildPlan) -> BuildContext:
    """The Dockerfile plus every file it copies: patches, shipped files, the manifest."""
    files: dict[str, bytes] = {
        "manifest.json": (json.dumps(plan.manifest(), indent=2) + "\n").encode(),
        "site.sh": (templates_dir() / "context" / "site.sh").read_bytes(),
    }
    if any(step.parallel_extensions for step in plan.compiled):
        files["build_ext/sitecustomize.py"] = (templates_dir() / "context" / "build_ext" / "sitecustomize.py").read_bytes()
    if plan.patches:
        files["patches/apply_patch.py"] = (templates_dir() / "context" / "apply_patch.py").read_bytes()
        for patch in plan.patches:
            body = {"id": patch.id, "package": patch.package, "file": patch.file, "find": patch.find,
                    "replace": patch.replace, "count": patch.count}
            files[f"patches/{patch.id}.json"] = (json.dumps(body, indent=2) + "\n").encode()
    if plan.bundled_copies:
        files["cuda_dedupe.py"] = (templates_dir() / "context" / "cuda_dedupe.py").read_bytes()
    if plan.multinode_apt:
        multinode = templates_dir() / "context" / "multinode"
        for path in sorted(multinode.iterdir()):
            files[f"multinode/{path.name}"] = path.read_bytes()
    smoke = templates_dir() / "context" / "smoke"
    for path in sorted(smoke.rglob("*.py")):
        files[f"smoke/{path.relative_to(smoke).as_posix()}"] = path.read_bytes()
    for shipped in plan.files:
        files[f"files/{shipped.name}"] = shipped.content.encode()
    files.update(lock_layers(plan.lock)[1])
    return BuildContext(plan, render_dockerfile(plan), tuple(sorted(files.items())))


def prepare(name: str, release: str | None, target: str | None,
            options: list[str] | tuple[str, ...] = ()) -> BuildContext:
    """Load, plan and render one stack (by name or profile path) into its build context."""
    return render_context(plan_for(name, release, target, options))


def check_dockerfile_path(path: str) -> None:
    """Refuse an -o path before anything is written: only a regular file (or a new one) in a folder that exists."""
    shown = printable(path)
    try:
        check_output_path(path)
        folder = Path(path).parent
        if not folder.is_dir():
            raise RenderError(f"cannot write {shown}: folder {printable(str(folder))} does not exist")
    except InputRefused as exc:
        raise RenderError(f"cannot write {shown}: {exc} (-o takes a regular file, or '-' for stdout; "
                          "--context writes a whole build context)") from None
    except OSError as exc:
        raise RenderError(f"cannot write {shown}: {exc.strerror or exc}") from None


def write_dockerfile(context: BuildContext, path: str) -> None:
    """Write the Dockerfile alone (atomically, a regular file with the umask's mode) to ``path``."""
    check_dockerfile_path(path)
    write_atomic(path, context.dockerfile, RenderError)


def write_context(context: BuildContext, folder: Path) -> None:
    """Write the whole build context into ``folder``, which must be new or empty (all or nothing)."""
    try:
        if folder.is_symlink():
            raise RenderError(f"--context {printable(str(folder))} is a symbolic link: name a new or empty folder")
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise RenderError(f"--context {printable(str(folder))} must be a new or empty folder")
        write_folder_atomic(folder, context.write, RenderError)
    except OSError as exc:  # a name too long, a symlink loop, a folder that cannot be listed
        raise RenderError(f"cannot write {printable(str(folder))}: {exc.strerror or exc}") from None


def write_rendered(context: BuildContext, dockerfile: str | None, folder: Path | None) -> None:
    """`render -o FILE --context DIR`: a bad FILE is refused before DIR is made; a failure leaves neither."""
    if dockerfile is not None:
        check_dockerfile_path(dockerfile)
    made = folder is not None and not os.path.lexists(folder)
    if folder is not None:
        write_context(context, folder)
    if dockerfile is not None:
        try:
            write_dockerfile(context, dockerfile)
        except RenderError:
            if made:
                shutil.rmtree(folder, ignore_errors=True)
            raise


def dockerfile_for(context: BuildContext, site_secret: str | None = None,
                   cache_mounts: tuple[tuple[str, str], ...] = ()) -> str:
    """The Dockerfile an engine builds: the context's own for the classic dialect, else its plan in that dialect.

    Both have the same instructions and build the same image; only the classic one is hashed.
    """
    if site_secret is None and not cache_mounts:
        return context.dockerfile
    return render_dockerfile(context.plan, site_secret=site_secret, cache_mounts=cache_mounts)
