"""The `stackbuild` command line and everything a person sees (output, list/show data); may import every other package, and nothing imports it."""

from .commands import main

__all__ = ["main"]
