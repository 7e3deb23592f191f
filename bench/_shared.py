"""What the benches share: the checkout on sys.path (so `python bench/X.py` runs without an install)
and the host's one-build-at-a-time lock. Everything else they need is the library's own entry points
(builder.images.build.build_context / build_image, the engines in builder.engine), never a copy."""

from __future__ import annotations

import contextlib
import fcntl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUILD_LOCK = Path("/tmp/stackbuild-build.lock")


@contextlib.contextmanager
def build_lock(path: Path = BUILD_LOCK, *, say_waiting: bool = True) -> Iterator[float]:
    """Hold the host's build lock (flock, as `flock /tmp/stackbuild-build.lock` takes it); the seconds waited."""
    started = time.monotonic()
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say_waiting:
                print(f"  (waiting for {path}: another build holds it)", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
