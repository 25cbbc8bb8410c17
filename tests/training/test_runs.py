"""A run's record: the history and curve in the bundle, the MLflow run, ``compare``, and the
train-time version that stays traceable after publish."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bundle as bf
from bundle import versions
from training import tracking
from training.cli import app

runner = CliRunner()


def _train(data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--model",
                               "lightgcn", "--max-epochs", "3", *extra])


@pytest.fixture(autouse=True)
def _tracking_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "_warned", [])  # each test starts with tracking on


def _client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.as_uri())


def test_train_keeps_its_history_and_curve_and_logs_the_run(
    toy_dataset_dir: Path, tmp_path: Path, mlflow_store: Path
) -> None:
    result = _train(toy_dataset_dir, tmp_path / "b", "--patience", "20")
    assert result.exit_code == 0, result.output
    bundle = bf.load_bundle(tmp_path / "b")  # checksums verified, history and curve included
    assert {bf.HISTORY, bf.CURVE} <= set(bundle.manifest.files)
    history = json.loads((tmp_path / "b" / bf.HISTORY).read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert all(e["loss"] > 0 and e["train_seconds"] > 0 and 0 <= e["recall@20"] <= 1
               for e in history["epochs"])
    assert history["report"]["test"]["all"] == bundle.manifest.metrics["test"]
    assert history["stopped_by"] == "max_epochs"  # 3 epochs, patience 20
    assert (tmp_path / "b" / bf.CURVE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the output: a plain line per epoch (not a terminal), labelled, no carriage returns
    assert "\r" not in result.output
    epochs = [line for line in result.output.splitlines() if line.startswith("lightgcn epoch")]
    assert len(epochs) == 3 and all("valid_recall@20" in line for line in epochs)
    assert "after training [4/4] logging the run to MLflow" in result.output
    assert "warning: max_epochs 3 stopped the run" in result.output
    # the phases add up to the wall time (to the rounding of each term)
    wall, terms = re.search(r"^([\d.]+) s wall = (.*)$", result.output, re.M).groups()
    parts = [float(t) for t in re.findall(r"([\d.]+) s (?!/)", terms)]
    assert abs(sum(parts) - float(wall)) <= 0.05 * len(parts) + 0.05
    assert f"version {bundle.manifest.run_id}" in result.output
    assert f"RECSYS_BUNDLE={tmp_path / 'b'} python -m service" in result.output

    runs = _client(mlflow_store).search_runs(
        [_client(mlflow_store).get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["model"] == "lightgcn" and run.data.params["patience"] == "20"
    assert run.data.tags["bundle.run_id"] == bundle.manifest.run_id
    assert run.data.tags["bundle.path"] == str((tmp_path / "b").resolve())
    steps = _client(mlflow_store).get_metric_history(run.info.run_id, "valid_recall_at_20")
    assert sorted((m.step, m.value) for m in steps) == [
        (e["epoch"], e["recall@20"]) for e in history["epochs"]]
    assert run.data.metrics["final_test_recall_at_20"] == pytest.approx(
        bundle.manifest.metrics["test"]["recall@20"])
    logged = {a.path for a in _client(mlflow_store).list_artifacts(run.info.run_id)}
    assert {bf.CURVE, bf.HISTORY, bf.MANIFEST} <= logged

    # a retrain adds its gate decision to the candidate's run (training.retrain)
    decision = {"accepted": False, "valid": {"candidate": 0.1, "live": 0.2}, "holdout": {}}
    (tmp_path / "gate.json").write_text(json.dumps(decision))
    tracking.log_decision(run.info.run_id, decision, tmp_path / "gate.json")
    run = _client(mlflow_store).get_run(run.info.run_id)
    assert run.data.metrics["gate_accepted"] == 0.0
    assert run.data.metrics["gate_valid_live"] == 0.2
    assert "gate.json" in {a.path for a in _client(mlflow_store).list_artifacts(run.info.run_id)}


def test_tracking_never_fails_a_training(
    toy_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-folder").write_text("")  # a file store that cannot be created
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "not-a-folder" / "runs").as_uri())
    result = _train(toy_dataset_dir, tmp_path / "b", "--quiet")
    assert result.exit_code == 0, result.output
    assert bf.HISTORY in bf.load_bundle(tmp_path / "b").manifest.files
    assert "MLflow run" not in result.output

    monkeypatch.setattr(tracking, "_warned", [])
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # mlflow not installed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "ok").as_uri())
    result = _train(toy_dataset_dir, tmp_path / "c", "--quiet")
    assert result.exit_code == 0, result.output
    assert tracking._warned and not (tmp_path / "ok").exists()


def test_compare_prints_a_row_per_bundle_and_the_config_that_differs(
    toy_dataset_dir: Path, tmp_path: Path
) -> None:
    assert _train(toy_dataset_dir, tmp_path / "a", "--quiet", "--no-mlflow").exit_code == 0
    assert _train(toy_dataset_dir, tmp_path / "b", "--quiet", "--no-mlflow", "--lr", "0.02",
                  "--hparam", "num_layers=1").exit_code == 0
    trained_as = bf.read_manifest(tmp_path / "b").run_id
    published = versions.publish(tmp_path / "b", tmp_path / "root")
    live = tmp_path / "root" / versions.VERSIONS / published
    result = runner.invoke(app, ["compare", str(tmp_path / "a"), str(live)])
    assert result.exit_code == 0, result.output
    header, first, second = result.output.splitlines()
    for column in ("version", "trained as", "model", "data", "epochs run/best", "valid R@20",
                   "valid N@20", "test R@20", "test N@20", "warm test R@20", "cold test R@20",
                   "time s", "config: lr", "config: hparams.num_layers"):
        assert column in header
    assert "config: patience" not in header  # the same in both
    assert published in second and trained_as in second  # traceable after publish
    metrics = bf.read_manifest(live).metrics
    assert f"{metrics['test']['recall@20']:.4f}" in second
    assert f"{metrics['valid']['ndcg@20']:.4f}" in second
    assert "0.02" in second and "0.005" in first
    assert "3/" in first and "lightgcn" in first

    markdown = runner.invoke(app, ["compare", "--markdown", str(tmp_path / "a"), str(live)])
    assert markdown.output.splitlines()[1].startswith("|---")
    missing = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path)])
    assert missing.exit_code == 2 and "not a bundle" in missing.output
