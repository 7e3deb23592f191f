"""The one exception family of stackbuild, and the exit codes the CLI maps it to.

Every error a user can cause is a ``StackbuildError``: the CLI prints ``error: <message>`` on
stderr and exits with the class's ``exit_code``. Anything else is a bug and gets a traceback
only with ``--debug``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .safety.printable import printable


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
        # a YAML key or a path can hold escape sequences or line breaks: print them as escapes
        where = f"{printable(self.file)}:{self.line}" if self.line else printable(self.file)
        path, message, fix = printable(self.path), printable(self.message), printable(self.fix)
        text = f"{where}: {path}: {message}" if path else f"{where}: {message}"
        return f"{text} ({fix})" if fix else text


class UsageError(StackbuildError):
    """A flag's value is malformed (the same exit code as the parser's own usage errors)."""

    exit_code = 2


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


class ConfigError(StackbuildError):
    """A setting (config file, STACKBUILD_* variable or flag) is invalid."""

    exit_code = 6


class EngineUnavailable(StackbuildError):
    """No Docker engine answered; the message says what was tried and how to start one."""

    exit_code = 7


class BuildError(StackbuildError):
    """An image build failed; the message names the step, its exit code, its last lines and the log."""

    exit_code = 8

    def __init__(self, message: str, *, step: int = 0, total: int = 0, instruction: str = "",
                 exit_status: int | None = None, tail: tuple[str, ...] = (), log_path: str | None = None,
                 diagnosis: tuple[str, ...] = ()):
        self.reason = message
        self.step, self.total, self.instruction = step, total, instruction
        self.exit_status, self.tail, self.log_path = exit_status, tuple(tail), log_path
        self.diagnosis = tuple(diagnosis)
        super().__init__(self._text())

    def _text(self) -> str:
        if not self.step:
            text = self.reason
        else:
            status = f" (exit code {self.exit_status})" if self.exit_status is not None else ""
            instruction = self.instruction if len(self.instruction) <= 160 else self.instruction[:157] + "..."
            text = f"step {self.step}/{self.total} failed{status}: {instruction}"
            if self.exit_status is None:
                text += f"\n  {self.reason}"
        if self.tail:
            text += "\nlast lines of its output:\n" + "\n".join(f"  {line}" for line in self.tail)
        if self.diagnosis:
            text += "\n" + "\n".join(self.diagnosis)
        if self.log_path:
            text += f"\nfull log: {self.log_path}"
        return text

    def with_log(self, tail: tuple[str, ...], log_path: str | None, diagnosis: tuple[str, ...] = ()) -> BuildError:
        return BuildError(self.reason, step=self.step, total=self.total, instruction=self.instruction,
                          exit_status=self.exit_status, tail=tail, log_path=log_path, diagnosis=diagnosis)


class SmokeError(StackbuildError):
    """Smoke checks failed, or could not run in a container."""

    exit_code = 9


class ContainerError(StackbuildError):
    """A container could not be created, started or used."""

    exit_code = 10


class DoctorError(StackbuildError):
    """doctor could not read what it was given (a log, standard input, a model folder)."""

    exit_code = 11


class RegistryError(StackbuildError):
    """A push or pull failed: the registry is unreachable, denies access, or lacks the image.

    ``reason`` is one of ``not-found``, ``unreachable``, ``denied``, ``zstd`` (an engine too old to
    unpack zstd layers) or ``other``, so pull-or-build can tell "not published yet" (build quietly)
    from a registry or engine problem (warn, then build).
    """

    exit_code = 12

    def __init__(self, message: str, reason: str = "other"):
        super().__init__(message)
        self.reason = reason


class LockError(StackbuildError):
    """A lock is missing, stale, unreadable or could not be made."""

    exit_code = 13


class AuditError(StackbuildError):
    """`stackbuild audit` found a known vulnerability neither fixed nor allowed, or an expired allowlist entry."""

    exit_code = 14


class AuditUnavailable(StackbuildError):
    """`stackbuild audit` could not get the vulnerability data (PyPI's JSON API did not answer)."""

    exit_code = 15


class ProposeError(StackbuildError):
    """`stackbuild propose` found no release to propose: the blocking incompatibility, with its error."""

    exit_code = 16


class SubmitError(StackbuildError):
    """`stackbuild launch --submit`: the scheduler's client (sbatch, kubectl) is not installed here, or it
    refused the job (its files stay written)."""

    exit_code = 17


# Signals: what a shell reports for a process they ended (128 + SIGINT / SIGTERM), here after unwinding.
INTERRUPTED, TERMINATED = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled, `timeout`, `docker stop` of a wrapper): raised like Ctrl-C, so
    whatever a command holds (a smoke container, a buildx process, a half-written file) is undone."""


def raise_terminated(signum, frame) -> None:
    """The SIGTERM handler: unwind like Ctrl-C."""
    raise Terminated()

EXIT_CODES = {
    0: "success",
    1: "unexpected internal error (run again with --debug and report it)",
    2: "usage error: unknown command, option or malformed argument",
    ProfileError.exit_code: "invalid stack profile or knowledge base",
    SelectionError.exit_code: "unknown stack, release, target, option, image or container",
    RenderError.exit_code: "rendering failed or the output could not be written",
    ConfigError.exit_code: "invalid setting (config file, STACKBUILD_* variable or flag)",
    EngineUnavailable.exit_code: "no Docker engine answered, or the Docker client's own config.json cannot be used",
    BuildError.exit_code: "the image build failed",
    SmokeError.exit_code: "a smoke check failed, or the checks could not run",
    ContainerError.exit_code: "a container could not be created, started or used",
    DoctorError.exit_code: "doctor could not read the log or model folder it was given",
    RegistryError.exit_code: "a push or pull failed: registry unreachable, access denied, image missing or mislabelled",
    LockError.exit_code: "a lock is stale, edited by hand, missing, unreadable or could not be made (`stackbuild lock`)",
    AuditError.exit_code: "audit: a locked package has a known vulnerability that is neither fixed nor allowed (or an "
                          "audit_allow entry expired)",
    AuditUnavailable.exit_code: "audit: the vulnerability data could not be had (PyPI's JSON API did not answer)",
    ProposeError.exit_code: "propose: no release could be proposed (its report names the blocking incompatibility "
                            "and its error); nothing but the report was written",
    SubmitError.exit_code: "launch --submit: sbatch or kubectl is not installed here, or the scheduler refused the "
                           "job (its files stay written)",
    INTERRUPTED: "interrupted by Ctrl-C, after undoing what the command had started",
    TERMINATED: "terminated by SIGTERM, after undoing what the command had started",
}
