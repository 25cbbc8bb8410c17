"""The operator's commands: ``publish``, ``rollback``, ``versions``, ``bootstrap``, ``retrain``,
``schedule``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli import models  # noqa: F401  (the training commands come first in --help)
from training.cli.app import _exit_on, app
from training.config import TrainConfig, load_config_file

ROOT_OPTION = typer.Option(envvar="RECSYS_BUNDLES_ROOT",
                           help="bundles root: versions/ and the current link")


DATA_OPTION = typer.Option(envvar="RECSYS_DATA", help="base dataset name or folder")
CONFIG_OPTION = typer.Option(envvar="RECSYS_TRAIN_CONFIG", help="JSON/TOML TrainConfig file")


@app.command("publish")
def publish_command(
    bundle: Annotated[Path, typer.Option(help="candidate bundle folder")],
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    keep: Annotated[int, typer.Option(help="versions kept (the current one always)")] = 5,
) -> None:
    """Publish a bundle as a new version and point current at it (atomic)."""
    from bundle import BundleError, versions

    with _exit_on(BundleError, ValueError, OSError):
        name = versions.publish(bundle, root, keep=keep)
    typer.echo(f"published {name}; {root / versions.CURRENT} -> {name}")


@app.command("rollback")
def rollback_command(
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    to: Annotated[
        str | None, typer.Option(help="version to serve (default: the one before current)")
    ] = None,
) -> None:
    """Point current at an earlier published version (replicas follow within their poll)."""
    from bundle import BundleError, versions

    with _exit_on(BundleError):
        before = versions.current_version(root)
        name = versions.rollback(root, to)
    typer.echo(f"rolled back {before} -> {name}")


@app.command("versions")
def versions_command(root: Annotated[Path, ROOT_OPTION] = Path("bundles")) -> None:
    """List the published versions, oldest first; * marks the current one."""
    from bundle import versions

    live = versions.current_version(root)
    for name in versions.list_versions(root):
        typer.echo(f"{'*' if name == live else ' '} {name}")


@app.command("bootstrap")
def bootstrap_command(
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    data: Annotated[str, DATA_OPTION] = "tiktok",
    config: Annotated[Path | None, CONFIG_OPTION] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train and publish a first version when nothing is published yet (else do nothing)."""
    from bundle import BundleError, versions
    from training.data import DataError
    from training.pipeline import train_to_bundle

    live = versions.current_version(root)
    if live is not None:
        typer.echo(f"{root / versions.CURRENT} -> {live}: nothing to do")
        return
    with _exit_on(DataError, BundleError, ValueError, FileNotFoundError):
        cfg = TrainConfig(**(load_config_file(config) if config else {}))
        _, path = train_to_bundle(data, root / "candidate", cfg, overwrite=True,
                                  progress=not quiet)
        name = versions.publish(path, root)
    typer.echo(f"published {name}")


@app.command("retrain")
def retrain_command(
    root: Annotated[Path, ROOT_OPTION] = Path("bundles"),
    data: Annotated[str, DATA_OPTION] = "tiktok",
    config: Annotated[Path | None, CONFIG_OPTION] = None,
    database_url: Annotated[
        str, typer.Option(envvar="RECSYS_DATABASE_URL", help="the service's store")
    ] = "sqlite:///recsys.db",
    table_prefix: Annotated[str, typer.Option(envvar="RECSYS_TABLE_PREFIX")] = "",
    holdout_share: Annotated[
        float, typer.Option(help="newest share of events since the live cutoff held out")
    ] = 0.2,
    tolerance: Annotated[
        float, typer.Option(help="largest relative loss against live that still passes")
    ] = 0.02,
    keep: Annotated[int, typer.Option(help="versions kept")] = 5,
    max_epochs: Annotated[int | None, typer.Option(help="override the config")] = None,
    warm_start: Annotated[
        bool, typer.Option(help="start from the live bundle's weights when the model matches")
    ] = True,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Retrain on base data + the store, gate against live, publish if not worse (exit 1 if
    rejected: the live bundle keeps serving). The decision: ROOT/gate/gate.json and gate.prom."""
    from bundle import BundleError
    from training.data import DataError
    from training.retrain import retrain

    fields: dict[str, Any] = load_config_file(config) if config else {}
    if max_epochs is not None:
        fields["max_epochs"] = max_epochs
    with _exit_on(DataError, BundleError, ValueError, FileNotFoundError):
        decision = retrain(root, data, TrainConfig(**fields), database_url,
                           table_prefix=table_prefix, holdout_share=holdout_share,
                           tolerance=tolerance, keep=keep, warm_start=warm_start,
                           progress=not quiet)
    valid, holdout = decision["valid"], decision["holdout"]
    typer.echo(f"valid recall@20: candidate {valid['candidate']:.4f}, live {valid['live']:.4f}, "
               f"popularity {valid['popularity']:.4f}; holdout rows {holdout['rows']}"
               + (f": candidate {holdout['candidate']:.4f}, live {holdout['live']:.4f}"
                  if holdout["rows"] else ""))
    if not decision["accepted"]:
        typer.secho("rejected: " + "; ".join(decision["reasons"]), fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"published {decision['published']}")


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
