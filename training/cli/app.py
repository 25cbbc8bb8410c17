"""The ``python -m training`` Typer app and what its commands share (their commands live in
:mod:`training.cli.models` and :mod:`training.cli.lifecycle`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from training.config import parse_hparams

HELP = """Command line: ``python -m training train|select|evaluate|export|features|train-teachers``,
and the operator's ``bootstrap|retrain|schedule|publish|rollback|versions``."""
app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)


_started: dict[str, float] = {}  # "process": when `python -m training` began (training.cli)


def command_started() -> float:
    """When the running command began, for its wall time: the process's start under
    ``python -m training`` (imports included), else now (a command called in-process)."""
    return _started.pop("process", None) or time.perf_counter()


@contextmanager
def _exit_on(*errors: type[BaseException]) -> Iterator[None]:
    """A user's mistake (bad data, a broken bundle, a bad value) ends the command with its
    message in red and exit code 2, not a traceback."""
    try:
        yield
    except errors as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _parse_hparams(pairs: list[str]) -> dict[str, Any]:
    try:
        return parse_hparams(pairs)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _metrics_table(rows: dict[str, dict[str, float] | None]) -> str:
    keys = [f"{m}@{k}" for k in (10, 20, 50) for m in ("recall", "ndcg", "precision", "hit")]
    lines = ["split            " + " ".join(f"{k:>12}" for k in keys)]
    for name, metrics in rows.items():
        if metrics:
            lines.append(f"{name:<16} " + " ".join(f"{metrics.get(k, 0):>12.4f}" for k in keys))
    return "\n".join(lines)
