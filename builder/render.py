"""Render a BuildPlan into a BuildContext: the Dockerfile text plus the files it copies.

Pure: no Docker, no network, no clock. The same plan renders to the same bytes, which is what
makes golden files and content tags meaningful.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from .errors import RenderError
from .files import write_atomic, write_folder_atomic
from .lockfile import Lock, LockedPackage
from .plan import HELD, STACKBUILD_DIR, VENV, BuildPlan, plan_for
from .resources import templates_dir


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
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def shell_word(value: str) -> str:
    """One shell word, quoted only when it needs to be."""
    if any(ord(c) < 0x20 for c in value):
        raise RenderError(f"refusing to render a control character into a RUN line: {value!r}")
    return shlex.quote(value)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["dq"] = dockerfile_string
    env.filters["sh"] = shell_word
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


LAYER_NUMBER = {"bootstrap": 1, "torch": 2, "packages": 4, "last": 5}


def lock_layers(lock: Lock | None) -> tuple[dict[str, LockLayer], dict[str, bytes]]:
    """Each locked layer's files, by the lock's section key, and those files' content."""
    if lock is None:
        return {}, {}
    layers: dict[str, LockLayer] = {}
    files: dict[str, bytes] = {}

    def put(name: str, key: str, what: str, packages: list[LockedPackage]) -> str | None:
        if not packages:
            return None
        # nothing stack-specific here: the same section makes the same file, so layers are shared
        head = (f"# {what} of a stackbuild lock's [{key}] section, installed by one layer with "
                "pip install --no-deps" + ("" if what.startswith("git") else " --require-hashes") + "\n")
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


def render_dockerfile(plan: BuildPlan) -> str:
    """The Dockerfile text of a plan."""
    try:
        template = _environment().get_template("Dockerfile.j2")
        return template.render(plan=plan, venv=VENV, sbdir=STACKBUILD_DIR, held=HELD,
                               locked=lock_layers(plan.lock)[0])
    except jinja2.TemplateError as exc:
        raise RenderError(f"template error while rendering {plan.spec} ({plan.target.name}): {exc}") from None


def render_context(plan: BuildPlan) -> BuildContext:
    """The Dockerfile plus every file it copies: patches, shipped files, the manifest."""
    files: dict[str, bytes] = {
        "manifest.json": (json.dumps(plan.manifest(), indent=2) + "\n").encode(),
        "site.sh": (templates_dir() / "context" / "site.sh").read_bytes(),
    }
    if plan.patches:
        files["patches/apply_patch.py"] = (templates_dir() / "context" / "apply_patch.py").read_bytes()
        for patch in plan.patches:
            body = {"id": patch.id, "package": patch.package, "file": patch.file, "find": patch.find,
                    "replace": patch.replace, "count": patch.count}
            files[f"patches/{patch.id}.json"] = (json.dumps(body, indent=2) + "\n").encode()
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


def write_dockerfile(context: BuildContext, path: Path) -> None:
    """Write the Dockerfile alone (atomically) to ``path``."""
    if path.is_dir():
        raise RenderError(f"cannot write {path}: it is a folder (use --context for a build context)")
    write_atomic(path, context.dockerfile, RenderError)


def write_context(context: BuildContext, folder: Path) -> None:
    """Write the whole build context into ``folder``, which must be new or empty (all or nothing)."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RenderError(f"--context {folder} must be a new or empty folder")
    write_folder_atomic(folder, context.write, RenderError)
