"""Training commands: ``train``, ``train-teachers``, ``select``, ``export``, ``evaluate``,
``features``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli.app import _exit_on, _metrics_table, _parse_hparams, app, command_started
from training.cli.train_options import (
    default_of,
    echo_summary,
    model_option,
    summary,
    train_config,
)
from training.config import CKDConfig, ConfigError, TrainConfig, apply_settings


@app.command("train")
def train_command(
    data: Annotated[str, typer.Option(help="dataset folder, or a name under RECSYS_DATA_DIR")] = (
        "tiktok"
    ),
    out: Annotated[Path, typer.Option(help="bundle folder to write")] = Path("bundles/tiktok"),
    model: Annotated[str | None, model_option()] = None,
    config: Annotated[Path | None, typer.Option(
        help="JSON/TOML of training fields (training/config.py; flag names such as cold_start "
        "are accepted as keys); the flags override it", show_default="none")] = None,
    max_epochs: Annotated[int | None, typer.Option(
        help="most epochs (early stopping usually ends sooner)",
        show_default=default_of("max_epochs"))] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="BPR triples per batch", show_default=default_of("batch_size"))] = None,
    lr: Annotated[float | None, typer.Option(
        help="Adam learning rate", show_default=default_of("lr"))] = None,
    l2: Annotated[float | None, typer.Option(
        help="L2 weight (lambda of eq. 19)", show_default=default_of("l2"))] = None,
    l2_scope: Annotated[str | None, typer.Option(
        help="batch (rows a batch touches) or all (eq. 19 as written)",
        show_default=default_of("l2_scope"))] = None,
    patience: Annotated[int | None, typer.Option(
        help="epochs without a better valid recall@20 before stopping",
        show_default=default_of("patience"))] = None,
    seed: Annotated[int | None, typer.Option(
        help="seed of the split, sampling and initialisation",
        show_default=default_of("seed"))] = None,
    device: Annotated[str | None, typer.Option(
        help="auto, cpu or cuda", show_default=default_of("device"))] = None,
    cold_start: Annotated[float | None, typer.Option(
        help="share of items held out of training (0 = none; the field cold_start_fraction)",
        show_default=default_of("cold_start_fraction"))] = None,
    cold_start_fold: Annotated[int | None, typer.Option(
        help="hold out this disjoint fold of items (with --cold-start)",
        show_default=default_of("cold_start_fold"))] = None,
    new_item_share: Annotated[float | None, typer.Option(
        help="least share of validation top-20 slots for items without interactions",
        show_default=default_of("new_item_share"))] = None,
    new_item_slots: Annotated[float | None, typer.Option(
        help="reserved share of every list for items without interactions",
        show_default=default_of("new_item_slots"))] = None,
    epoch_valid_users: Annotated[int | None, typer.Option(
        help="validate each epoch on a fixed sample of this many users",
        show_default=default_of("epoch_valid_users"))] = None,
    hparam: Annotated[list[str] | None, typer.Option(
        help="model hyperparameter key=value (repeatable)", show_default="the model's")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="any training field field=value, JSON values (repeatable; every field of "
        "training/config.py, e.g. --set feature_set=title_fields)", show_default="none")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="replace an existing bundle (never a folder that is not a bundle)")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress (bar or per-epoch lines)")] = False,
    mlflow: Annotated[bool, typer.Option(
        help="log the run to MLflow: MLFLOW_TRACKING_URI, else ./mlruns")] = True,
    ckd: Annotated[bool, typer.Option(
        help="CKD modality-balanced distillation (teachers trained and cached first)")] = False,
    ckd_weight: Annotated[float | None, typer.Option(
        help="CKD lambda", show_default="the config's, else 0.01")] = None,
    ckd_beta: Annotated[float | None, typer.Option(
        help="CKD generic-term weight", show_default="the config's, else 5")] = None,
    ckd_temperature: Annotated[float | None, typer.Option(
        help="CKD temperature", show_default="the config's, else 0.1")] = None,
    ckd_without: Annotated[list[str] | None, typer.Option(
        help="CKD ablation: teachers, specific, generic or reweight (repeatable)",
        show_default="none")] = None,
) -> None:
    """Train a model and write a bundle (flags override the config file); the run's history
    and curve go into the bundle and, with --mlflow, to MLflow."""
    import time

    from bundle import BundleError
    from training.data import DataError
    from training.pipeline import check_target, train_to_bundle

    started = command_started()
    flags = {
        "model": ("--model", model), "max_epochs": ("--max-epochs", max_epochs),
        "batch_size": ("--batch-size", batch_size), "lr": ("--lr", lr), "l2": ("--l2", l2),
        "l2_scope": ("--l2-scope", l2_scope), "patience": ("--patience", patience),
        "seed": ("--seed", seed), "device": ("--device", device),
        "cold_start_fraction": ("--cold-start", cold_start),
        "cold_start_fold": ("--cold-start-fold", cold_start_fold),
        "new_item_share": ("--new-item-share", new_item_share),
        "new_item_slots": ("--new-item-slots", new_item_slots),
        "epoch_valid_users": ("--epoch-valid-users", epoch_valid_users),
    }
    with _exit_on(DataError, BundleError, ValueError, TypeError, FileNotFoundError):
        cfg = train_config(config, flags)  # the file, the flags, the model: before any data
        fields = cfg.model_dump(exclude_unset=True)
        if set_:
            try:
                fields = apply_settings(fields, set_)
            except ValueError as error:
                raise typer.BadParameter(str(error)) from None
        if hparam:
            fields["hparams"] = {**fields.get("hparams", {}), **_parse_hparams(hparam)}
        fields["ckd"] = _ckd_fields(fields.get("ckd"), ckd, ckd_weight, ckd_beta,
                                    ckd_temperature, ckd_without or [])
        cfg = train_config(None, {}, fields)
        check_target(out, overwrite)
        result, path = train_to_bundle(data, out, cfg, overwrite=overwrite, progress=not quiet,
                                       track=mlflow, tags={"command": "train"})
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
    echo_summary(summary(result, path, time.perf_counter() - started))


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
    config: Annotated[Path | None, typer.Option(
        help="JSON/TOML of TrainConfig fields", show_default="none")] = None,
    model: Annotated[str | None, model_option()] = None,
    retrain: Annotated[bool, typer.Option(help="train again even when cached")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train (or find cached) CKD's uni-modal teachers of a setting, one per modality."""
    from training.ckd import load_teacher, train_teachers
    from training.data import DataError
    from training.pipeline import prepare_dataset

    with _exit_on(DataError, ValueError, TypeError, FileNotFoundError):
        cfg = train_config(config, {"model": ("--model", model)})
        cfg = cfg if cfg.ckd is not None else cfg.model_copy(update={"ckd": CKDConfig()})
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
        help="write the winner's refit bundle here (else only the table and the config)",
        show_default="none")] = None,
    root: Annotated[Path | None, typer.Option(
        help="publish the winner's refit bundle as a new version under this bundles root",
        show_default="none")] = None,
    config_out: Annotated[Path | None, typer.Option(
        help="write the winner's served config (its setting + refit) to this file",
        show_default="none")] = None,
    table: Annotated[Path | None, typer.Option(
        help="comparison table (JSON beside)",
        show_default="benchmarks/results/select_<data>.md")] = None,
    trials: Annotated[int | None, typer.Option(
        help="Optuna trials per candidate", show_default="the candidates file's")] = None,
    seeds: Annotated[int | None, typer.Option(
        help="seeds of each candidate's best trial", show_default="the candidates file's")] = None,
    seed: Annotated[int, typer.Option(help="first seed")] = 2024,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out bundle")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    mlflow: Annotated[bool, typer.Option(
        help="log the refit run to MLflow: MLFLOW_TRACKING_URI, else ./mlruns")] = True,
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
        if not candidates.is_file():
            raise FileNotFoundError(f"candidates file {candidates} does not exist")
        try:
            spec = json.loads(candidates.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(f"{candidates}:{error.lineno}:{error.colno}: invalid JSON: "
                              f"{error.msg}") from None
        record = select(data, spec, trials=trials, seeds=seeds, seed=seed)
        table = table or Path("benchmarks/results") / f"select_{Path(data).name}.md"
        write_selection(record, table, config_out,
                        shlex.join(["python", "-m", "training", *sys.argv[1:]]))
        typer.echo("\n".join(record["table"]))
        typer.echo(f"chosen: {record['winner']}; table {table}"
                   + (f", config {config_out}" if config_out else ""))
        if out is None and root is None:
            return
        served = TrainConfig(**record["served_config"])
        target = out if out is not None else root / "candidates" / "select"
        result, path = train_to_bundle(data, target, served, overwrite=overwrite or out is None,
                                       progress=not quiet, track=mlflow,
                                       tags={"command": "select"})
        typer.echo(f"refit bundle written to {path} (test recall@20 "
                   f"{result.test_metrics['recall@20']:.4f})")
        if root is not None:
            typer.echo(f"published {versions.publish(path, root, reason='select')}")


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
        str | None, typer.Option(help="dataset", show_default="the one it was trained on")
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
