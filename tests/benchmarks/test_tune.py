"""Optuna tuning, seeds and report end to end on the toy dataset; the per-user statistics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.harness import TRAIN_FIELDS, array_key, fixed_fields
from benchmarks.quality_report import per_user_mean
from benchmarks.stats import paired_bootstrap
from benchmarks.tune import SEARCH_SPACES, build_parser, main, space_for
from models.registry import MODEL_NAMES, default_hparams
from training.data import load_dataset
from training.report import per_user_hits, warm_cold_report

MODELS = ("lightgcn", "metammf_lightgcn", "mostpop")
# 20% of the items held out, so the toy data has cold test rows (it has none otherwise)
SMALL = ["--max-epochs", "2", "--patience", "2", "--cold-start-fraction", "0.2"]


def _numbers(value: Any) -> list[float]:
    """Every float/int metric inside a nested JSON value (booleans and None left out)."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


def test_every_model_has_one_search_space() -> None:
    families = [m for entry in SEARCH_SPACES.values() for m in entry["models"]]
    assert sorted(families) == sorted(MODEL_NAMES)
    for model in ("metammf_lightgcn", "early_lightgcn", "late_lightgcn", "hybrid_lightgcn"):
        space = space_for(model)  # nothing of the family's space is dropped for these
        assert set(space) == set(SEARCH_SPACES["lightgcn_fusion"]["space"])
        assert set(space) - set(TRAIN_FIELDS) <= set(default_hparams(model))


@pytest.mark.slow
def test_tune_seeds_report_end_to_end(toy_dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "optuna"
    data = ["--data", str(toy_dataset_dir)]
    for model in MODELS:
        path = out / f"toy-{model}.json"
        main(["tune", *data, "--model", model, "--trials", "2", *SMALL, "--out", str(path)])
        study = json.loads(path.read_text())
        assert study["model"] == model
        assert len(study["trials"]) == (1 if model == "mostpop" else 2)  # training-free: one
        assert all(t["state"] == "COMPLETE" and 0 <= t["value"] <= 1 for t in study["trials"])
        assert study["best"]["value"] == max(t["value"] for t in study["trials"])
        assert "best_epoch" in study["trials"][0] and "seconds_per_epoch" in study["trials"][0]

    seeds_json = out / "seeds-toy.json"
    common = [*data, *SMALL, "--tuned-dir", str(out), "--out", str(seeds_json)]
    main(["seeds", "--models", ",".join(MODELS), "--seeds", "2", *common])
    record = json.loads(seeds_json.read_text())
    arrays = dict(np.load(seeds_json.with_suffix(".npz")))
    for model in MODELS:
        entry = record["models"][model]
        tuned = json.loads((out / f"toy-{model}.json").read_text())["best"]["setting"]
        assert entry["setting"] == tuned
        assert [r["seed"] for r in entry["runs"]] == [2024, 2025]
        for run in entry["runs"]:
            metrics = [v for s in ("valid", "test") for k, v in run[s].items() if k != "rows"]
            assert all(0 <= x <= 1 for x in _numbers(metrics))
            per_user = arrays[array_key(model, run["seed"], "all", "recall")]
            assert per_user.mean() == pytest.approx(run["test"]["recall@20"]["all"])
            assert run["test"]["recall@20"]["cold"] is not None  # cold rows exist
        has_curve = entry["runs"][0]["calibration"] is not None
        assert has_curve == (model == "metammf_lightgcn")

    table = tmp_path / "quality_toy.md"
    runs = ["--runs", str(seeds_json)]
    main(["report", *data, "--baseline", "lightgcn", *runs, "--out", str(table)])
    text = table.read_text()
    assert text.splitlines()[2].startswith("python benchmarks/tune.py tune")  # commands first
    assert "python benchmarks/tune.py seeds" in text and "python benchmarks/tune.py report" in text
    summary = text.split("## Test metrics")[1].split("## Paired")[0]
    for model in MODELS:
        assert re.search(rf"^\| {model} \|", summary, re.M), model
        assert f"| {model} |" in text.split("## Paired")[1]
    cells = [float(x) for x in re.findall(r"(-?\d+\.\d+) ± (?:-?\d+\.\d+)", summary)]
    assert cells and all(0 <= x <= 1 for x in cells)
    assert "### metammf_lightgcn" in text and "vs lightgcn, cold rows" in text
    assert "vs lightgcn, warm rows" in text
    slots = text.split("## Reserved new-item slots")[1].split("## Weight of the fused")[0]
    assert re.search(r"^\| 0\.1 \| ", slots, re.M)  # one row per reserved share
    fused = text.split("## Weight of the fused")[1]
    assert re.search(r"^\| 0\.0 \| ", fused, re.M) and re.search(r"^\| 1\.0 \| ", fused, re.M)
    pooled = text.split("pooled over the runs' rows")[1].split("## New-item scale")[0]
    assert re.search(r"^\| metammf_lightgcn \| 2 \| ", pooled, re.M)


def test_cold_start_folds_run_one_fold_a_seed_and_need_a_fraction(
    toy_dataset_dir: Path, tmp_path: Path
) -> None:
    seeds_json = tmp_path / "folds.json"
    main(["seeds", "--data", str(toy_dataset_dir), "--models", "content_knn",
          "--cold-start-fraction", "0.25", "--cold-start-folds", "2", "--out", str(seeds_json)])
    runs = json.loads(seeds_json.read_text())["models"]["content_knn"]["runs"]
    assert [r["seed"] for r in runs] == [2024, 2025]
    with pytest.raises(SystemExit):
        main(["seeds", "--data", str(toy_dataset_dir), "--models", "content_knn",
              "--cold-start-folds", "2", "--out", str(seeds_json)])


def test_per_user_hits_average_to_the_report(toy_dataset_dir: Path) -> None:
    dataset = load_dataset(toy_dataset_dir).with_cold_items(0.2, seed=1)
    generator = torch.Generator().manual_seed(0)
    users = torch.randn(dataset.num_users, 8, generator=generator)
    items = torch.randn(dataset.num_items, 8, generator=generator)
    report = warm_cold_report(users, items, dataset, "test")
    for part in ("all", "warm", "cold"):
        ids, recall = per_user_hits(users, items, dataset, "test", 20, part)
        assert ids.size == report[part]["users"] == recall.size
        assert recall.mean() == pytest.approx(report[part]["recall@20"])
    with pytest.raises(ValueError):
        per_user_hits(users, items, dataset, "test", part="cold_among_cold")


def test_per_user_mean_over_seeds_takes_the_union_of_users() -> None:
    arrays = {
        array_key("m", 1, "cold", "users"): np.array([0, 2]),
        array_key("m", 1, "cold", "recall"): np.array([1.0, 0.0]),
        array_key("m", 2, "cold", "users"): np.array([2, 5]),
        array_key("m", 2, "cold", "recall"): np.array([1.0, 1.0]),
    }
    ids, recall = per_user_mean(arrays, "m", [1, 2], "cold")
    assert ids.tolist() == [0, 2, 5] and recall.tolist() == [1.0, 0.5, 1.0]


def test_paired_bootstrap_covers_the_true_difference() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, size=3000)  # per-user noise shared by both models
    a = base + 0.05 + rng.normal(0, 0.05, size=base.size)
    diff, low, high = paired_bootstrap(a, base, n=2000, seed=0)
    assert low < 0.05 < high and low > 0  # true difference inside, zero outside
    assert diff == pytest.approx((a - base).mean())
    assert high - low < 0.01  # paired: the shared per-user noise cancels


def test_paired_bootstrap_of_identical_inputs_is_zero() -> None:
    a = np.random.default_rng(2).uniform(size=500)
    diff, low, high = paired_bootstrap(a, a.copy())
    assert diff == 0 and abs(high - low) < 1e-12 and abs(low) < 1e-12
    with pytest.raises(ValueError):
        paired_bootstrap(a, a[:-1])


def test_tune_starts_from_the_base_setting(toy_dataset_dir: Path, tmp_path: Path) -> None:
    base = {"lr": 0.004, "new_item_slots": 0.1, "hparams": {"embed_dim": 64, "knn_weight": 0.5}}
    settings = tmp_path / "base.json"
    settings.write_text(json.dumps({"metammf_lightgcn": base}))
    path = tmp_path / "study.json"
    main(["tune", "--data", str(toy_dataset_dir), "--model", "metammf_lightgcn", "--trials", "2",
          "--startup-trials", "1", "--settings", str(settings), *SMALL, "--out", str(path)])
    study = json.loads(path.read_text())
    first, second = (t["setting"] for t in study["trials"])
    assert first["lr"] == 0.004 and first["hparams"]["embed_dim"] == 64  # trial 0 is the base
    for setting in (first, second):  # unsearched keys stay fixed in every trial
        assert setting["new_item_slots"] == 0.1 and setting["hparams"]["knn_weight"] == 0.5
    assert study["base"] == base and "n_startup_trials=1" in study["sampler"]
    assert "combine" not in study["space"]  # the kNN part needs combine=beside


def test_a_row_run_in_parts_is_merged_and_curves_can_be_skipped(toy_dataset_dir, tmp_path):
    data = ["--data", str(toy_dataset_dir), *SMALL]
    parts = []
    for seed in (2024, 2025):
        out = tmp_path / f"part{seed}.json"
        main(["seeds", *data, "--models", "metammf_lightgcn", "--seeds", "1",
              "--seed-from", str(seed), "--no-report-curves", "--hparam", "knn_weight=1.0",
              "--out", str(out)])
        parts.append(str(out))
    run = json.loads(Path(parts[1]).read_text())["models"]["metammf_lightgcn"]["runs"][0]
    assert run["seed"] == 2025 and run["calibration"]["curve"] == []  # choices only
    assert run["knn_scale"]["curve"] == [] and run["knn_scale"]["chosen"] > 0
    table = tmp_path / "merged.md"
    main(["report", *data[:2], "--runs", *parts, "--out", str(table)])
    summary = table.read_text().split("## Test metrics")[1].split("## Paired")[0]
    assert re.search(r"^\| metammf_lightgcn \| 2 \|", summary, re.M)  # both seeds, one row


def test_set_reaches_any_training_field_of_a_benchmark_run() -> None:
    args = build_parser().parse_args(["seeds", "--models", "lightgcn", "--patience", "3",
                                      "--set", "choose_new_item_slots=true",
                                      "--set", "new_item_slots=0.05"])
    assert fixed_fields(args) == {"patience": 3, "choose_new_item_slots": True,
                                  "new_item_slots": 0.05}
    typo = build_parser().parse_args(["seeds", "--models", "lightgcn", "--set", "patiense=3"])
    with pytest.raises(ValueError, match="did you mean patience"):
        fixed_fields(typo)
