"""stackbuild: curated, pinned Docker images for LLM training stacks (import package `builder`)."""

__version__ = "0.1.0"
