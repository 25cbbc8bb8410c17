"""The operator's commands: ``publish``, ``rollback``, ``versions``, ``bootstrap``, ``retrain``,
``schedule``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from training.cli import models  # noqa: F401  (the training commands come first in --help)
from training.cli.app import _exit_on, app
from training.cli.train_options import train_config

ROOT_OPTION = typer.Option(envvar="RECSYS_BUNDLES_ROOT",
                           help="bundles root: versions/ and the current link")


DATA_OPTION = typer.Option(envvar="RECSYS_DATA", help="base dataset name or folder")
CONFIG_OPTION = typer.Option(envvar="RECSYS_TRAIN_CONFIG", show_default="none: the served "
                             "model's defaults", help="JSON/TOML TrainConfig file")
MLFLOW_HELP = "log the candidate's run to MLflow: MLFLOW_TRACKING_URI, else ./mlruns"


@app.command("publish")
def publish_command(
    bundle: Annotated[Path, typer.Option(help="candidate bundle folder")],
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    keep: Annotated[int, typer.Option(help="versions kept (the current one always)")] = 5,
    reason: Annotated[str, typer.Option(help="why, for the publish history")] = "by hand",
) -> None:
    """Publish a bundle as a new version and point current at it (atomic)."""
    from bundle import BundleError, versions

    with _exit_on(BundleError, ValueError, OSError):
        name = versions.publish(bundle, root, keep=keep, reason=reason)
    typer.echo(f"published {name}; {root / versions.CURRENT} -> {name}")


@app.command("rollback")
def rollback_command(
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    to: Annotated[
        str | None, typer.Option(help="version to serve",
                                 show_default="the one live before current")
    ] = None,
    reason: Annotated[str, typer.Option(help="why, for the publish history")] = "by hand",
) -> None:
    """Point current at the version that was live before it, by the publish history, or at a
    named one (replicas follow within their poll)."""
    from bundle import BundleError, versions

    with _exit_on(BundleError):
        before = versions.current_version(root)
        name = versions.rollback(root, to, reason=reason)
    typer.echo(f"rolled back {before} -> {name}")


@app.command("versions")
def versions_command(
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    last: Annotated[int, typer.Option(help="moves of the publish history shown")] = 10,
) -> None:
    """List the published versions, oldest first (* current, < the rollback target, and
    versions that never went live), then the newest moves of the publish history."""
    import time

    from bundle import history, versions

    live, target = versions.current_version(root), versions.rollback_target(root)
    moves = history.read_history(root)
    was_live = history.ever_live(moves) | {live}
    for name in versions.list_versions(root):
        mark = "*" if name == live else "<" if name == target else " "
        note = "" if name in was_live or not moves else "  (never live)"
        typer.echo(f"{mark} {name}{note}")
    if moves:
        typer.echo("history (newest last):")
    for move in moves[-last:] if last > 0 else []:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(move.at))
        typer.echo(f"  {stamp}Z {move.action:8} {move.previous or '-'} -> {move.version}"
                   + (f"  ({move.reason})" if move.reason else ""))


DATABASE_OPTION = typer.Option(envvar="RECSYS_DATABASE_URL",
                               help="the service's store (PostgreSQL: its advisory lock "
                                    "keeps one retrain at a time)")


@app.command("bootstrap")
def bootstrap_command(
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    data: Annotated[str, DATA_OPTION] = "tiktok",
    config: Annotated[Path | None, CONFIG_OPTION] = None,
    database_url: Annotated[str, DATABASE_OPTION] = "sqlite:///recsys.db",
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    mlflow: Annotated[bool, typer.Option(help=MLFLOW_HELP)] = True,
) -> None:
    """Train and publish a first version when nothing is published yet (else do nothing);
    exit 3 when another bootstrap or retrain of the root is running."""
    from bundle import BundleError, versions
    from training.data import DataError
    from training.retrain import bootstrap

    live = versions.current_version(root)
    if live is not None:
        typer.echo(f"{root / versions.CURRENT} -> {live}: nothing to do")
        return
    with _locked_exit(), _exit_on(DataError, BundleError, ValueError, TypeError,
                                  FileNotFoundError):
        cfg = train_config(config, {})
        name = bootstrap(root, data, cfg, database_url, progress=not quiet, track=mlflow)
    typer.echo(f"published {name}" if name else
               f"{root / versions.CURRENT} -> {versions.current_version(root)}: nothing to do")


@app.command("retrain")
def retrain_command(
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    data: Annotated[str, DATA_OPTION] = "tiktok",
    config: Annotated[Path | None, CONFIG_OPTION] = None,
    database_url: Annotated[str, DATABASE_OPTION] = "sqlite:///recsys.db",
    table_prefix: Annotated[str, typer.Option(
        envvar="RECSYS_TABLE_PREFIX", help="prefix of the store's table names")] = "",
    holdout_share: Annotated[
        float, typer.Option(help="newest share of events since the live cutoff held out")
    ] = 0.2,
    tolerance: Annotated[
        float, typer.Option(help="largest relative loss against live that still passes")
    ] = 0.02,
    min_users: Annotated[
        int, typer.Option(help="fewest distinct users behind the new events")] = 5,
    max_repeat_share: Annotated[
        float, typer.Option(help="largest share of new events that repeat a known pair")
    ] = 0.5,
    min_signal: Annotated[
        float, typer.Option(help="the holdout's best predictor, in multiples of a random list")
    ] = 3.0,
    keep: Annotated[int, typer.Option(help="versions kept")] = 5,
    max_epochs: Annotated[int | None, typer.Option(
        help="override the config", show_default="the config's")] = None,
    warm_start: Annotated[
        bool, typer.Option(help="start from the live bundle's weights when the model matches")
    ] = True,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    mlflow: Annotated[bool, typer.Option(help=MLFLOW_HELP)] = True,
) -> None:
    """Retrain on base data + the store, gate against live, publish if not worse (exit 1 if
    rejected: the live bundle keeps serving; exit 3 if another run holds the lock). The
    decision: ROOT/gate/gate.json and gate.prom; one line per run in ROOT/runs.jsonl."""
    from bundle import BundleError
    from training.data import DataError
    from training.gate import TrafficRules
    from training.retrain import retrain

    rules = TrafficRules(min_users=min_users, max_repeat_share=max_repeat_share,
                         min_signal=min_signal)
    with _locked_exit(), _exit_on(DataError, BundleError, ValueError, TypeError,
                                  FileNotFoundError):
        cfg = train_config(config, {"max_epochs": ("--max-epochs", max_epochs)})
        decision = retrain(root, data, cfg, database_url,
                           table_prefix=table_prefix, holdout_share=holdout_share,
                           tolerance=tolerance, keep=keep, warm_start=warm_start,
                           progress=not quiet, rules=rules, track=mlflow)
    valid, holdout = decision["valid"], decision["holdout"]
    typer.echo(f"valid recall@20: candidate {valid['candidate']:.4f}, live {valid['live']:.4f}, "
               f"popularity {valid['popularity']:.4f}; holdout rows {holdout['rows']}"
               + (f": candidate {holdout['candidate']:.4f}, live {holdout['live']:.4f}"
                  if holdout["rows"] else ""))
    if not decision["accepted"]:
        typer.secho("rejected: " + "; ".join(decision["reasons"]), fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"published {decision['published']}")


@contextmanager
def _locked_exit() -> Iterator[None]:
    """Another run holds the retrain lock: say who, exit LOCKED_EXIT (nothing was done)."""
    from training.errors import LOCKED_EXIT
    from training.retrain_lock import RetrainLocked

    try:
        yield
    except RetrainLocked as error:
        typer.secho(str(error), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(LOCKED_EXIT) from None


@app.command("schedule")
def schedule_command(
    once: Annotated[
        bool, typer.Option(help="run one retrain now under the lock and exit (a CronJob's pod)")
    ] = False,
) -> None:
    """Run the nightly retraining scheduler (configured by RECSYS_* variables, see
    training/scheduler.py): cron trigger with a time zone, one run at a time, a grace time.
    With --once the exit code says what happened: 0 published, 1 rejected, 2 failed, 3 skipped
    (another run holds the lock)."""
    from training.scheduler import RetrainMetrics, SchedulerSettings, run_retrain, serve

    if not once:
        serve()
        return
    result = run_retrain(SchedulerSettings(), RetrainMetrics())
    raise typer.Exit({"published": 0, "rejected": 1, "failed": 2}.get(result, 3))
