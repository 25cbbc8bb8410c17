"""Command line: ``python -m training <command>`` (``--help`` lists them)."""

import logging

# importing the command modules registers their commands on the app
from training.cli import lifecycle, models  # noqa: F401
from training.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app()
