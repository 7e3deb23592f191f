"""Where the shipped data lives: stacks/ and templates/.

In a checkout (or an editable install) they are the top-level folders beside builder/; in a
wheel they are copied into builder/_data/ (pyproject.toml's force-include), so an installed
stackbuild works with no checkout around.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # builder/


def _data_dir(name: str) -> Path:
    bundled = _PACKAGE / "_data" / name
    if bundled.is_dir():
        return bundled
    return _PACKAGE.parent / name


def stacks_dir() -> Path:
    """The folder of the shipped stack profiles and known-issues.yaml."""
    return _data_dir("stacks")


def templates_dir() -> Path:
    """The folder of the Jinja Dockerfile templates."""
    return _data_dir("templates")


def display_path(path: Path) -> str:
    """A short name for messages: 'stacks/qlora.yaml' for shipped files, else the path as given."""
    try:
        path = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the loader says so, under the name as given
        return str(path)
    shipped = stacks_dir().resolve()
    if path.parent == shipped:
        return f"stacks/{path.name}"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def user_path(path: Path) -> str:
    """A path as a user can use it from here: relative to the working folder when inside it, else absolute."""
    path = Path(os.path.abspath(path))  # the name as given, no link followed (a symlink loop stays a name)
    try:
        return str(path.relative_to(Path(os.path.abspath(os.getcwd()))))
    except (ValueError, OSError):  # elsewhere, or the working folder is gone
        return str(path)
