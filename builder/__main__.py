"""The `stackbuild` program (and `python -m builder`): signals first, then everything else.

Ctrl-C and SIGTERM are handled from the program's first line, before the command line module and
its libraries are imported (a few tenths of a second): a signal in that time ends the program with
``error: interrupted`` (exit 130) or ``error: terminated`` (exit 143), never a traceback. From
then on ``output.ErrorBoundary`` holds them: noted while the arguments are parsed, and raised once
the command runs, which unwinds it (so what it started is undone) and says the same.
"""

from __future__ import annotations

import os
import signal
import sys

from .errors import INTERRUPTED, TERMINATED, Terminated, raise_terminated


def _exit(code: int) -> None:
    # CPython 3.11 remembers a Ctrl-C that interrupted code run from a string (a dataclass's
    # generated methods, typing's annotations) and, at exit, kills itself with SIGINT instead of
    # exiting 130 even when the interrupt was handled: leave without that last step
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, raise_terminated)  # SIGINT raises KeyboardInterrupt already
    try:
        from .cli.commands import app

        app()
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while the program started
        # a second signal while the first is reported would print a traceback: no more of them
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        terminated = isinstance(exc, Terminated)
        print("error: terminated" if terminated else "error: interrupted", file=sys.stderr, flush=True)
        _exit(TERMINATED if terminated else INTERRUPTED)
    except SystemExit as exc:
        if exc.code == INTERRUPTED:  # the command was interrupted, unwound and said so
            _exit(INTERRUPTED)
        raise


if __name__ == "__main__":
    main()
