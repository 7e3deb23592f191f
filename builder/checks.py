"""The smoke checks an image carries (pure data: rendering reads it, nothing here runs them).

Each check is a file in templates/context/smoke/checks/, copied into the image with the runner;
the manifest lists the checks of that image so a pulled image can prove itself.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class SmokeCheck:
    name: str
    file: str
    summary: str
    gpu: bool = False
    timeout: int = 600


# Every image carries these; stack-specific checks (one per fix a stack claims) come next.
COMMON_CHECKS = (
    SmokeCheck("python-version", "python_version.py", "the image's Python is the release's"),
    SmokeCheck("pins", "pins.py", "every pinned package at its version, importable"),
    SmokeCheck("pip-check", "pip_check.py", "pip check finds no broken requirement"),
    SmokeCheck("torch-compile", "torch_compile.py", "torch.compile of a tiny function runs"),
    SmokeCheck("shm", "shm.py", "/dev/shm is large enough (warns under 1 GB)"),
)
