"""Choosing the served model on validation, and the refit that serves it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import bundle as bf
from training.cli import app
from training.config import TrainConfig
from training.pipeline import prepare_dataset, train_to_bundle
from training.select import select, with_params
from training.trainer import TrainResult, train

SMALL = {"embed_dim": 16, "content_dim": 8, "knn_weight": 1.0, "first_hidden": 16}


def _candidates() -> dict:
    return {"trials": 2, "seeds": 2, "candidates": {
        "lightgcn": {"config": {"model": "lightgcn", "max_epochs": 2}},
        "early": {"config": {"model": "early_lightgcn", "max_epochs": 2, "new_item_slots": 0.1,
                             "choose_new_item_slots": True, "hparams": SMALL},
                  "search": {"item_graph_k": ["categorical", [0, 3]]}},
    }}


def test_params_go_to_config_fields_or_hyperparameters() -> None:
    setting = with_params({"model": "lightgcn", "hparams": {"embed_dim": 8}},
                          {"lr": 0.01, "num_layers": 3})
    assert setting == {"model": "lightgcn", "lr": 0.01,
                       "hparams": {"embed_dim": 8, "num_layers": 3}}


def test_the_candidate_best_on_validation_is_chosen_and_served_refit(toy_dataset_dir: Path):
    seen: list[tuple[str, int, dict]] = []

    def runner(dataset, setting, seed) -> TrainResult:
        seen.append((setting["model"], seed, setting))
        return train(dataset, TrainConfig(**{**setting, "seed": seed}), progress=False)

    record = select(str(toy_dataset_dir), _candidates(), runner=runner)
    means = {name: np.mean([run["valid"] for run in entry["seeds"]])
             for name, entry in record["candidates"].items()}
    assert record["winner"] == max(means, key=means.get)
    # the given setting is trial 0 of a study; LightGCN's (nothing searched) is trained once
    early_trials = record["candidates"]["early"]["trials"]
    assert len(early_trials) == 2 and early_trials[0]["setting"]["hparams"]["item_graph_k"] == 0
    assert len(record["candidates"]["lightgcn"]["trials"]) == 1
    # the best trial of each candidate is run again with one more seed
    assert [seed for model, seed, _ in seen if model == "lightgcn"] == [2024, 2025]
    served = TrainConfig(**record["served_config"])
    assert served.refit is not None and not served.choose_new_item_slots
    winner_runs = record["candidates"][record["winner"]]["seeds"]
    assert served.refit.epochs == sorted(r["best_epoch"] for r in winner_runs)[0]


def test_a_refit_trains_on_validation_for_its_epochs_with_its_rules(toy_dataset_dir: Path,
                                                                     tmp_path: Path) -> None:
    config = TrainConfig(model="early_lightgcn", max_epochs=50, new_item_slots=0.1,
                         hparams=SMALL, refit={"epochs": 3, "knn_scale": 2.0, "cold_scale": 0.5})
    dataset = prepare_dataset(toy_dataset_dir, config)
    plain = prepare_dataset(toy_dataset_dir, config.model_copy(update={"refit": None}))
    assert len(dataset.valid) == 0 and len(dataset.train) == len(plain.train) + len(plain.valid)
    result, path = train_to_bundle(toy_dataset_dir, tmp_path / "b", config, progress=False)
    assert result.epochs_run == 3 and result.valid_metrics == {}
    assert float(result.model.knn_scale) == 2.0 and float(result.model.cold_scale) == 0.5
    manifest = bf.load_bundle(path).manifest
    assert manifest.serving.new_item_slots == 0.1 and manifest.config["refit"]["epochs"] == 3
    # a refit bundle has no validation split left to score: evaluate reports the test split
    out = CliRunner().invoke(app, ["evaluate", "--bundle", str(path)])
    assert out.exit_code == 0, out.output
    assert "test" in out.output and "valid " not in out.output


def test_select_command_writes_the_table_the_config_and_the_bundle(toy_dataset_dir: Path,
                                                                   tmp_path: Path) -> None:
    candidates = tmp_path / "candidates.json"
    candidates.write_text(json.dumps(_candidates()))
    out = CliRunner().invoke(app, [
        "select", "--candidates", str(candidates), "--data", str(toy_dataset_dir),
        "--table", str(tmp_path / "select.md"), "--config-out", str(tmp_path / "served.json"),
        "--out", str(tmp_path / "bundle"), "--trials", "1", "--seeds", "1", "--quiet"])
    assert out.exit_code == 0, out.output
    assert "chosen" in (tmp_path / "select.md").read_text()
    served = json.loads((tmp_path / "served.json").read_text())
    assert served["refit"]["epochs"] >= 1
    assert bf.load_bundle(tmp_path / "bundle").manifest.config["refit"]["epochs"] == (
        served["refit"]["epochs"])


def test_a_bad_candidates_file_is_refused_before_training(toy_dataset_dir: Path) -> None:
    with pytest.raises(ValueError, match="search spec"):
        select(str(toy_dataset_dir), {"candidates": {"x": {
            "config": {"model": "lightgcn"}, "search": {"lr": ["uniform", 1, 2]}}}})
    with pytest.raises(ValueError, match="no candidates"):
        select(str(toy_dataset_dir), {"candidates": {}})
