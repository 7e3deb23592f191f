"""Shared test helpers: the CLI runner and the golden-file switch."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from builder.cli.commands import app


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        help="rewrite tests/golden/*.Dockerfile from the current profiles and templates",
    )


@pytest.fixture
def cli():
    """Run the stackbuild app in-process; returns (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, list(args))
        return result.exit_code, result.stdout, result.stderr

    return run
