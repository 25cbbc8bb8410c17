"""Every trained bundle as an MLflow run: its config, its per-epoch curve, its final report.

Where: ``$MLFLOW_TRACKING_URI`` (a tracking server, a database) or, unset, a local file store:
``mlruns/`` in the working directory for ``train`` and ``select``, ``<bundles root>/mlruns`` for
``bootstrap`` and ``retrain`` (the root is the nightly job's persistent volume). MLflow 3 keeps
the file store in maintenance mode, so this module sets ``MLFLOW_ALLOW_FILE_STORE`` for it.
Experiment ``$MLFLOW_EXPERIMENT_NAME``, else ``mmrec``. A run holds:

* parameters: every training field (``hparams.*`` and ``ckd.*``/``refit.*`` flattened);
* metrics per epoch, with the epoch as step: ``loss`` (and each named loss term), the
  validation metrics (``valid_recall_at_20`` ...: MLflow names cannot hold ``@``),
  ``train_seconds`` and ``valid_seconds``;
* the final report as metrics (``valid_*``, ``test_*``, ``test_warm_*``, ``test_cold_*``,
  ``test_served_*`` at 20) and the phases' times (``seconds_*``);
* tags: the bundle's path, version, ``run_id`` (its train-time version, kept by publish) and
  content hash, the model, the dataset, how it stopped (and ``published_version`` once
  published);
* artifacts: ``training_curve.png``, ``training_history.json``, ``manifest.json`` and, for a
  nightly retrain, the gate's decision ``gate.json`` (with ``gate_accepted`` 1/0 as a metric).

Tracking never fails a training: without mlflow, or when the store cannot be written, it warns
once and the run goes on with its bundle (which holds the same record).
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import bundle as bundle_format
from bundle.versions import content_hash
from training.config import flatten_fields
from training.run_record import stop_reason
from training.trainer import TrainResult

log = logging.getLogger(__name__)

DEFAULT_STORE = "mlruns"
DEFAULT_EXPERIMENT = "mmrec"
FINAL_KEYS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10", "precision@20", "hit@20")
_warned: list[str] = []


def tracking_uri(store: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else the file store ``store`` (default ``./mlruns``)."""
    folder = Path(store) if store is not None else Path.cwd() / DEFAULT_STORE
    return os.environ.get("MLFLOW_TRACKING_URI") or folder.absolute().as_uri()


def _warn_once(what: str, error: BaseException) -> None:
    if not _warned:
        log.warning("MLflow tracking off for this process (%s: %s: %s); the bundle keeps the "
                    "run's history", what, type(error).__name__, error)
    _warned.append(what)


def metric_name(name: str) -> str:
    """An MLflow-legal metric name (letters, digits, ``_ - . / :`` and spaces)."""
    return re.sub(r"[^\w\-. /:]", "_", name.replace("@", "_at_"))


def _client(store: Path | None) -> tuple[Any, str]:
    uri = tracking_uri(store)
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    return client, (experiment.experiment_id if experiment else client.create_experiment(name))


def _numbers(values: dict[str, Any] | None, prefix: str, keys: tuple[str, ...] = ()) -> dict:
    return {metric_name(prefix + k): float(v) for k, v in (values or {}).items()
            if (not keys or k in keys) and isinstance(v, int | float) and not isinstance(v, bool)}


def _epoch_name(key: str) -> str:
    """A history key as a metric: losses and times as they are, the rest is validation."""
    kept = key.startswith("loss") or key.endswith("_seconds")
    return metric_name(key if kept else f"valid_{key}")


def _metrics(result: TrainResult) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(_epoch_name(key), float(value), now, int(record["epoch"]))
               for record in result.history for key, value in record.items()
               if key != "epoch" and isinstance(value, int | float)
               and not isinstance(value, bool)]
    final = {
        **_numbers(result.valid_metrics, "final_valid_", FINAL_KEYS),
        **_numbers(result.test_metrics, "final_test_", FINAL_KEYS),
        **_numbers(result.test_report.get("warm"), "final_test_warm_", FINAL_KEYS),
        **_numbers(result.test_report.get("cold"), "final_test_cold_", FINAL_KEYS),
        **_numbers(result.served_test_report.get("all"), "final_test_served_", FINAL_KEYS),
        **_numbers(result.timings, "seconds_"),
        "best_epoch": float(result.best_epoch), "epochs_run": float(result.epochs_run),
    }
    return metrics + [Metric(k, v, now, 0) for k, v in final.items()]


def log_training(result: TrainResult, path: Path, *, tags: dict[str, str] | None = None,
                 store: Path | None = None) -> str | None:
    """Log a written bundle's run (to ``store`` when no tracking URI is set); returns the
    MLflow run id (None when tracking is off)."""
    if _warned:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client, experiment = _client(store)
            return _log(client, experiment, result, Path(path), tags or {})
    except Exception as error:  # noqa: BLE001  (tracking never fails a training)
        _warn_once(tracking_uri(store), error)
        return None


def _log(client: Any, experiment: str, result: TrainResult, path: Path,
         tags: dict[str, str]) -> str:
    from mlflow.entities import Param

    manifest = bundle_format.read_manifest(path)
    stopped, _ = stop_reason(result)
    run = client.create_run(experiment, tags={
        "mlflow.runName": f"{manifest.model} {manifest.run_id or manifest.version}",
        "bundle.path": str(path.resolve()), "bundle.version": manifest.version,
        "bundle.run_id": str(manifest.run_id), "bundle.content": content_hash(manifest.files),
        "model": manifest.model, "dataset": str(manifest.dataset.get("name")),
        "stopped_by": stopped, **tags})
    run_id = run.info.run_id
    params = [Param(k, str(v)[:500]) for k, v in flatten_fields(result.config.model_dump()).items()]
    metrics = _metrics(result)
    for start in range(0, len(params), 100):  # MLflow's limits per call
        client.log_batch(run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    for name in (bundle_format.CURVE, bundle_format.HISTORY, bundle_format.MANIFEST):
        if (path / name).is_file():
            client.log_artifact(run_id, str(path / name))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_decision(run_id: str | None, decision: dict[str, Any], decision_file: Path,
                 store: Path | None = None) -> None:
    """Add a retrain's gate decision to its candidate's run: ``gate.json`` as an artifact,
    ``gate_accepted`` and the gate's Recall@20 numbers as metrics, the published version."""
    if run_id is None or _warned:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mlflow.entities import Metric

            client, _ = _client(store)
            now = int(time.time() * 1000)
            numbers = {"gate_accepted": float(bool(decision["accepted"]))}
            for split in ("valid", "holdout"):
                numbers.update(_numbers(decision.get(split), f"gate_{split}_"))
            client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in numbers.items()])
            client.set_tag(run_id, "gate.accepted", str(bool(decision["accepted"])))
            if decision.get("published"):
                client.set_tag(run_id, "published_version", decision["published"])
                client.set_tag(run_id, "bundle.path", decision.get("candidate", ""))
            client.log_artifact(run_id, str(decision_file))
    except Exception as error:  # noqa: BLE001  (tracking never fails a retrain)
        _warn_once(tracking_uri(store), error)
