"""Command line: ``python -m training train|export|evaluate|features``, and the operator's
``bootstrap|retrain|schedule|publish|rollback|versions``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from training.config import TrainConfig, apply_settings, load_config_file, parse_hparams

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


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


@app.command("train")
def train_command(
    data: Annotated[str, typer.Option(help="dataset folder, or a name under RECSYS_DATA_DIR")] = (
        "tiktok"
    ),
    out: Annotated[Path, typer.Option(help="bundle folder to write")] = Path("bundles/tiktok"),
    model: Annotated[str | None, typer.Option(help="model name (see models.registry)")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON/TOML of TrainConfig fields")] = None,
    max_epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    l2: Annotated[float | None, typer.Option()] = None,
    l2_scope: Annotated[
        str | None, typer.Option(help="batch (rows a batch touches) or all (eq. 19 as written)")
    ] = None,
    patience: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    cold_start: Annotated[
        float | None, typer.Option(help="share of items held out of training (0 = none)")
    ] = None,
    cold_start_fold: Annotated[
        int | None, typer.Option(help="hold out this disjoint fold of items (with --cold-start)")
    ] = None,
    new_item_share: Annotated[
        float | None,
        typer.Option(help="least share of validation top-20 slots for items without interactions"),
    ] = None,
    new_item_slots: Annotated[
        float | None,
        typer.Option(help="reserved share of every list for items without interactions"),
    ] = None,
    epoch_valid_users: Annotated[
        int | None, typer.Option(help="validate each epoch on a fixed sample of this many users")
    ] = None,
    hparam: Annotated[
        list[str] | None, typer.Option(help="model hyperparameter key=value (repeatable)")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="any training field field=value, JSON values (repeatable; every field of "
        "training/config.py, e.g. --set feature_set=title_fields)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing bundle")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    ckd: Annotated[bool, typer.Option(
        help="CKD modality-balanced distillation (teachers trained and cached first)")] = False,
    ckd_weight: Annotated[float | None, typer.Option(help="CKD lambda (0.01)")] = None,
    ckd_beta: Annotated[float | None, typer.Option(help="CKD generic-term weight (5)")] = None,
    ckd_temperature: Annotated[float | None, typer.Option(help="CKD temperature (0.1)")] = None,
    ckd_without: Annotated[list[str] | None, typer.Option(
        help="CKD ablation: teachers, specific, generic or reweight (repeatable)")] = None,
) -> None:
    """Train a model and write a bundle (flags override the config file)."""
    from bundle import BundleError
    from training.data import DataError
    from training.pipeline import train_to_bundle

    fields: dict[str, Any] = load_config_file(config) if config else {}
    overrides = {
        "model": model,
        "max_epochs": max_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "l2": l2,
        "l2_scope": l2_scope,
        "patience": patience,
        "seed": seed,
        "device": device,
        "cold_start_fraction": cold_start,
        "cold_start_fold": cold_start_fold,
        "new_item_share": new_item_share,
        "new_item_slots": new_item_slots,
        "epoch_valid_users": epoch_valid_users,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if set_:
        try:
            fields = apply_settings(fields, set_)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    if hparam:
        fields["hparams"] = {**fields.get("hparams", {}), **_parse_hparams(hparam)}
    with _exit_on(DataError, BundleError, ValueError, TypeError, FileNotFoundError):
        fields["ckd"] = _ckd_fields(fields.get("ckd"), ckd, ckd_weight, ckd_beta,
                                    ckd_temperature, ckd_without or [])
        cfg = TrainConfig(**fields)
        result, path = train_to_bundle(data, out, cfg, overwrite=overwrite, progress=not quiet)
    typer.echo(f"bundle written to {path}")
    typer.echo(
        _metrics_table(
            {
                "valid": result.valid_metrics,
                "test": result.test_metrics,
                "test, as served": (result.served_test_report.get("all")
                                    if result.served_test_report is not result.test_report
                                    else None),
                "test, warm rows": result.test_report.get("warm"),
                "test, cold rows": result.cold_metrics,
                "cold among cold": result.cold_only_metrics,
            }
        )
    )
    typer.echo(
        f"best epoch {result.best_epoch} of {result.epochs_run}, "
        f"{result.seconds_per_epoch:.2f} s/epoch, {result.train_seconds:.0f} s training, "
        f"{result.validation_seconds:.0f} s validating epochs, {result.final_seconds:.0f} s "
        "choosing the serving rules and scoring the reports"
    )


CKD_PARTS = ("teachers", "specific", "generic", "reweight")


def _ckd_fields(section: dict[str, Any] | None, enabled: bool, weight: float | None,
                beta: float | None, temperature: float | None,
                without: list[str]) -> dict[str, Any] | None:
    """The config's ``ckd`` section with the flags over it (``--ckd`` turns it on)."""
    given = {"weight": weight, "beta": beta, "temperature": temperature}
    if section is None and not enabled:
        if any(v is not None for v in given.values()) or without:
            raise ValueError("the --ckd-* flags need --ckd (or a ckd section in the config)")
        return None
    if unknown := set(without) - set(CKD_PARTS):
        raise ValueError(f"--ckd-without takes {', '.join(CKD_PARTS)}; got {sorted(unknown)}")
    return {**(section or {}), **{k: v for k, v in given.items() if v is not None},
            **{part: False for part in without}}


@app.command("train-teachers")
def train_teachers_command(
    data: Annotated[str, typer.Option(help="dataset folder, or a name under RECSYS_DATA_DIR")] = (
        "tiktok"
    ),
    config: Annotated[Path | None, typer.Option(help="JSON/TOML of TrainConfig fields")] = None,
    model: Annotated[str | None, typer.Option(help="model name (see models.registry)")] = None,
    retrain: Annotated[bool, typer.Option(help="train again even when cached")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train (or find cached) CKD's uni-modal teachers of a setting, one per modality."""
    from training.ckd import load_teacher, train_teachers
    from training.data import DataError
    from training.pipeline import prepare_dataset

    fields: dict[str, Any] = load_config_file(config) if config else {}
    if model:
        fields["model"] = model
    fields["ckd"] = fields.get("ckd") or {}
    with _exit_on(DataError, ValueError, TypeError, FileNotFoundError):
        cfg = TrainConfig(**fields)
        dataset = prepare_dataset(data, cfg)
        paths = train_teachers(dataset, cfg, progress=not quiet, retrain=retrain)
    for path in paths:
        _, info = load_teacher(path)
        valid = info["valid"].get("all")
        typer.echo(f"{info['modality']}: {path} (valid Recall@20 {valid:.4f}, best epoch "
                   f"{info['best_epoch']}, {info['train_seconds']:.0f} s)")


@app.command("select")
def select_command(
    candidates: Annotated[Path, typer.Option(help="JSON: {trials, seeds, candidates: {name: "
                                             "{config, search}}} (training/select.py)")],
    data: Annotated[str, typer.Option(help="dataset folder, or a name under RECSYS_DATA_DIR")] = (
        "tiktok"
    ),
    out: Annotated[Path | None, typer.Option(
        help="write the winner's refit bundle here (else only the table and the config)")] = None,
    root: Annotated[Path | None, typer.Option(
        help="publish the winner's refit bundle as a new version under this bundles root")] = None,
    config_out: Annotated[Path | None, typer.Option(
        help="write the winner's served config (its setting + refit) to this file")] = None,
    table: Annotated[Path | None, typer.Option(
        help="comparison table (default benchmarks/results/select_<data>.md; JSON beside)")] = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials per candidate")] = None,
    seeds: Annotated[int | None, typer.Option(help="seeds of each candidate's best trial")] = None,
    seed: Annotated[int, typer.Option(help="first seed")] = 2024,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out bundle")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train every candidate configuration with a fixed Optuna budget, choose the best on
    validation, write the comparison, and train (and optionally publish) the winner refit on
    training + validation."""
    import json
    import shlex
    import sys

    from bundle import BundleError, versions
    from training.data import DataError
    from training.pipeline import train_to_bundle
    from training.select import select, write_selection

    with _exit_on(DataError, BundleError, ValueError, TypeError, FileNotFoundError):
        if not candidates.exists():
            raise FileNotFoundError(f"candidates file {candidates} does not exist")
        record = select(data, json.loads(candidates.read_text()), trials=trials, seeds=seeds,
                        seed=seed)
        table = table or Path("benchmarks/results") / f"select_{Path(data).name}.md"
        write_selection(record, table, config_out,
                        shlex.join(["python", "-m", "training", *sys.argv[1:]]))
        typer.echo("\n".join(record["table"]))
        typer.echo(f"chosen: {record['winner']}; table {table}"
                   + (f", config {config_out}" if config_out else ""))
        if out is None and root is None:
            return
        served = TrainConfig(**record["served_config"])
        target = out if out is not None else root / "candidate"
        result, path = train_to_bundle(data, target, served, overwrite=overwrite or out is None,
                                       progress=not quiet)
        typer.echo(f"refit bundle written to {path} (test recall@20 "
                   f"{result.test_metrics['recall@20']:.4f})")
        if root is not None:
            typer.echo(f"published {versions.publish(path, root)}")


@app.command("export")
def export_command(bundle: Annotated[Path, typer.Option(help="bundle folder")]) -> None:
    """Add the ONNX item and user towers to a bundle (done by train already)."""
    from bundle import BundleError
    from training.export import ExportError, export_bundle

    with _exit_on(BundleError, ExportError, FileNotFoundError):
        export_bundle(bundle)
    typer.echo(f"towers exported into {bundle}")


@app.command("evaluate")
def evaluate_command(
    bundle: Annotated[Path, typer.Option(help="bundle folder")],
    data: Annotated[
        str | None, typer.Option(help="dataset (default: the one it was trained on)")
    ] = None,
) -> None:
    """Re-score a bundle's stored embeddings on its dataset's validation and test splits, with
    the lists as the service builds them (the bundle's reserved new-item share) and the same
    rows ``train`` prints (without *as served*, which needs the model, not only the bundle)."""
    import torch

    from bundle import BundleError, load_bundle
    from training.data import DataError
    from training.pipeline import prepare_dataset
    from training.report import warm_cold_report

    with _exit_on(BundleError, DataError, ValueError):
        loaded = load_bundle(bundle)
        manifest = loaded.manifest
        config = TrainConfig(**manifest.config)
        dataset = prepare_dataset(data or manifest.dataset["path"], config)
    users = torch.as_tensor(loaded.user_embeddings)
    items = torch.as_tensor(loaded.item_embeddings)
    share = manifest.serving.new_item_slots
    # a refit bundle trained on its validation split: only its test split is held out
    reports = {s: warm_cold_report(users, items, dataset, s, slot_share=share)
               for s in ("valid", "test") if len(dataset.split(s))}
    test = reports.get("test", {})
    typer.echo(f"{manifest.model} on {dataset.name} (bundle {loaded.version}, "
               f"{share:.0%} of each list reserved for new items)")
    typer.echo(_metrics_table({
        "valid": reports.get("valid", {}).get("all"),
        "test": test.get("all"),
        "test, warm rows": test.get("warm"),
        "test, cold rows": test.get("cold"),
        "cold among cold": test.get("cold_among_cold"),
    }))


@app.command("features")
def features_command(
    encoder: Annotated[str, typer.Option(help="encoder name (see training.encoders)")] = "minilm",
    data: Annotated[
        str, typer.Option(help="raw MicroLens or derived folder, or a name under RECSYS_DATA_DIR")
    ] = "microlens-50k",
    pooling: Annotated[str, typer.Option(help="mean or cls (clip: embed)")] = "mean",
    layer: Annotated[int, typer.Option(help="hidden state: 0 = embeddings, -1 = last")] = -1,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Encode a dataset's item titles (cached per text) and write its text_feat.npy."""
    import numpy as np

    from training import microlens
    from training.data import DataError, resolve_dataset_path
    from training.encoders import EncoderError, get_encoder_spec
    from training.encoders.cache import StateTable

    with _exit_on(DataError, EncoderError, ValueError):
        spec = get_encoder_spec(encoder)
        if pooling not in spec.poolings:
            raise ValueError(
                f"encoder {encoder!r} pools {'|'.join(spec.poolings)}, not {pooling!r}"
            )
        folder = resolve_dataset_path(data)
        path = microlens.write_text_features(folder, encoder, pooling, layer, progress=not quiet)
    shape = np.load(path, mmap_mode="r").shape
    typer.echo(f"encoder cache: {StateTable.of(spec, pooling).folder}")
    typer.echo(
        f"text features: {path} ({shape[0]} x {shape[1]} float32; {encoder}, {pooling} pooling, "
        f"layer {layer})"
    )


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


def _metrics_table(rows: dict[str, dict[str, float] | None]) -> str:
    keys = [f"{m}@{k}" for k in (10, 20, 50) for m in ("recall", "ndcg", "precision", "hit")]
    lines = ["split            " + " ".join(f"{k:>12}" for k in keys)]
    for name, metrics in rows.items():
        if metrics:
            lines.append(f"{name:<16} " + " ".join(f"{metrics.get(k, 0):>12.4f}" for k in keys))
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app()
