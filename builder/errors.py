"""The one exception family of stackbuild, and the exit codes the CLI maps it to.

Every error a user can cause is a ``StackbuildError``: the CLI prints ``error: <message>`` on
stderr and exits with the class's ``exit_code``. Anything else is a bug and gets a traceback
only with ``--debug``.
"""

from __future__ import annotations

from dataclasses import dataclass


class StackbuildError(Exception):
    """Root of every error stackbuild raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One problem found in a profile: where it is, what is wrong, how to fix it."""

    file: str
    line: int
    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text} ({self.fix})" if self.fix else text


class ProfileError(StackbuildError):
    """A stack profile or the knowledge base is invalid; carries every problem found."""

    exit_code = 3

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        self.problems = tuple(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in {self.problems[0].file}" if count else "invalid profile"
        super().__init__(head + "\n" + "\n".join(str(p) for p in self.problems))


class SelectionError(StackbuildError):
    """The user named a stack, release, target or option that does not exist."""

    exit_code = 4


class RenderError(StackbuildError):
    """Rendering a Dockerfile failed (a template bug or an unwritable output)."""

    exit_code = 5


EXIT_CODES = {
    0: "success",
    1: "unexpected internal error (run again with --debug and report it)",
    2: "usage error: unknown command, option or malformed argument",
    ProfileError.exit_code: "invalid stack profile or knowledge base",
    SelectionError.exit_code: "unknown stack, release, target or option",
    RenderError.exit_code: "rendering failed or the output could not be written",
}
