"""Command line: ``python -m training <command>`` (``--help`` lists them)."""

import time

STARTED = time.perf_counter()  # the summary's wall time counts from here (imports included)

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

# importing the command modules registers their commands on the app
from training.cli import compare, lifecycle, models  # noqa: E402, F401
from training.cli.app import _started, app  # noqa: E402
from training.errors import STOPPED_EXIT  # noqa: E402

__all__ = ["app", "main"]


def _stop(signum: int, _frame: object) -> None:
    # As PID 1 in a container a process without a handler ignores SIGTERM and is killed after
    # the grace period; raising unwinds instead: locks, files and connections are released.
    print(f"stopped by {signal.Signals(signum).name}: nothing was published by this run",
          file=sys.stderr)
    raise SystemExit(STOPPED_EXIT)


def main() -> None:
    _started["process"] = STARTED
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, _stop)  # `schedule` installs its own (it exits 0)
    app()
