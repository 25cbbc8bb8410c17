"""Data -> trained model -> bundle: what ``python -m training train`` runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import bundle as bundle_format
from models.base import Recommender
from training import distributed
from training.checkpoint import save_checkpoint
from training.ckd import with_ckd
from training.config import TrainConfig
from training.data import Dataset, load_dataset
from training.export import ExportError, export_bundle
from training.feature_sets import with_feature_set
from training.progress import Phases
from training.report import new_items
from training.run_record import write_curve, write_history
from training.trainer import TrainResult, embeddings, model_inputs, train, users_after

log = logging.getLogger(__name__)


def prepare_dataset(data: str | Path, config: TrainConfig) -> Dataset:
    dataset = with_feature_set(load_dataset(data, seed=config.seed), config.feature_set,
                               layers=config.state_layers, pooling=config.state_pooling)
    if config.cold_start_fraction > 0:
        dataset = dataset.with_cold_items(config.cold_start_fraction, seed=config.seed,
                                          fold=config.cold_start_fold)
    if config.refit is not None:  # the served refit trains on validation too
        dataset = dataset.with_validation_in_training()
    return dataset


def write_result_bundle(
    result: TrainResult,
    dataset: Dataset,
    out: str | Path,
    *,
    overwrite: bool = False,
    data_cutoff: float | None = None,
) -> Path:
    """Write the trained model, its final embeddings and metrics as a bundle."""
    users, items = embeddings(result.model)
    if result.model.sequential_user:
        # a sequential user is served after every interaction it is known for, oldest first
        users = users_after(result.model, users, np.concatenate([dataset.valid, dataset.test]))
    graph, features, hparams = model_inputs(dataset, result.config)

    def write_weights(path: Path) -> None:
        save_checkpoint(
            result.model,
            path,
            name=result.config.model,
            graph=graph,
            item_features=features,
            modality_dims=dataset.modality_dims,
            hparams=hparams,
        )

    manifest = {
        "model": result.config.model,
        "config": result.config.model_dump(),
        "dataset": {
            "name": dataset.name,
            "path": dataset.source,
            "num_users": dataset.num_users,
            "num_items": dataset.num_items,
            "train": len(dataset.train),
            "valid": len(dataset.valid),
            "test": len(dataset.test),
            "cold_items": len(dataset.cold_items),
        },
        "modalities": [
            {"name": n, "dim": d}
            for n, d in zip(dataset.modality_names, dataset.modality_dims, strict=True)
        ],
        "metrics": result.summary(),
        "serving": {"new_item_slots": result.slot_share},
        "training_seconds": round(result.train_seconds, 2),
        "data_cutoff": time.time() if data_cutoff is None else data_cutoff,
    }
    return bundle_format.write_bundle(
        out,
        manifest=manifest,
        user_embeddings=users.cpu().numpy(),
        item_embeddings=items.cpu().numpy(),
        user_ids=dataset.external_user_ids(),
        item_ids=dataset.external_item_ids(),
        interactions=dataset.matrix("train", "valid", "test"),
        new_items=[dataset.external_item_ids()[i] for i in np.flatnonzero(new_items(dataset))],
        train_history=dataset.train_histories(),
        extra_files={bundle_format.WEIGHTS: write_weights,
                     bundle_format.HISTORY: lambda path: write_history(result, path),
                     bundle_format.CURVE: lambda path: write_curve(result, path)},
        overwrite=overwrite,
    )


def check_target(out: str | Path, overwrite: bool) -> None:
    """Refuse to write over anything but a bundle: an existing folder needs ``overwrite``, and
    even then only a bundle (a ``manifest.json``) or an empty folder is replaced, never a
    folder of someone's files (nothing is deleted)."""
    out = Path(out)
    if not out.exists():
        return
    if not overwrite:
        raise bundle_format.BundleError(f"{out} already exists (pass --overwrite to replace it)")
    if out.is_dir() and (out / bundle_format.MANIFEST).is_file() or (
            out.is_dir() and not any(out.iterdir())):
        return
    raise bundle_format.BundleError(
        f"{out} is not a bundle (no {bundle_format.MANIFEST}): --overwrite replaces only a "
        "bundle, so nothing was deleted; choose another --out or empty it yourself")


def train_to_bundle(
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    track: bool | Path = False,
    tags: dict[str, str] | None = None,
    phases: Phases | None = None,
) -> tuple[TrainResult, Path]:
    """Load ``data``, train and write the bundle ``out``; ``track``: log the run to MLflow
    (:mod:`training.tracking`, with ``tags``; a folder: the file store to use when no
    tracking URI is set); ``phases`` times each phase."""
    out = Path(out)
    check_target(out, overwrite)
    phases = phases or Phases(show=progress, after=3 + bool(track))
    data_cutoff = time.time()  # the service replays online events logged after this moment
    with phases.phase("load_data"):
        dataset = prepare_dataset(data, config)
    return train_dataset_to_bundle(dataset, out, config, data_cutoff=data_cutoff,
                                   overwrite=overwrite, progress=progress, track=track,
                                   tags=tags, phases=phases)


def train_dataset_to_bundle(
    dataset: Dataset,
    out: str | Path,
    config: TrainConfig,
    *,
    data_cutoff: float,
    overwrite: bool = False,
    progress: bool = True,
    init_model: Callable[[Recommender], Any] | None = None,
    track: bool | Path = False,
    tags: dict[str, str] | None = None,
    phases: Phases | None = None,
) -> tuple[TrainResult, Path]:
    """Train on a prepared dataset and write the exported bundle (``data_cutoff``: the time
    of the newest data in it, after which the service replays what it logged); with
    ``track`` the run goes to MLflow too (``result.tracking_run``)."""
    check_target(out, overwrite)
    log.info("%s", dataset.summary())
    writes = distributed.context().writes
    phases = phases or Phases(show=progress and writes, after=3 + bool(track))
    init_model = with_ckd(dataset, config, init_model, progress=progress)
    result = train(dataset, config, progress=progress, init_model=init_model, phases=phases)
    if not writes:  # under torchrun, rank 0 writes the bundle
        return result, Path(out)
    with phases.phase("write", "writing the bundle (weights, embeddings, history, curve)"):
        path = write_result_bundle(result, dataset, out, overwrite=overwrite,
                                   data_cutoff=data_cutoff)
    with phases.phase("export", "exporting the ONNX serving towers"):
        try:
            export_bundle(path)
        except ExportError as error:
            log.info("%s", error)
    if track:
        from training import tracking

        store = track if isinstance(track, Path) else None
        with phases.phase("track", f"logging the run to MLflow ({tracking.tracking_uri(store)})"):
            result.tracking_run = tracking.log_training(result, path, tags=tags, store=store)
    result.timings = phases.seconds
    return result, path
