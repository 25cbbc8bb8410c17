"""Command line: ``python -m training <command>`` (``--help`` lists them)."""

import logging
import signal
import sys

# importing the command modules registers their commands on the app
from training.cli import lifecycle, models  # noqa: F401
from training.cli.app import app
from training.errors import STOPPED_EXIT

__all__ = ["app", "main"]


def _stop(signum: int, _frame: object) -> None:
    # As PID 1 in a container a process without a handler ignores SIGTERM and is killed after
    # the grace period; raising unwinds instead: locks, files and connections are released.
    print(f"stopped by {signal.Signals(signum).name}: nothing was published by this run",
          file=sys.stderr)
    raise SystemExit(STOPPED_EXIT)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, _stop)  # `schedule` installs its own (it exits 0)
    app()
