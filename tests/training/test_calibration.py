"""Serving rules are chosen on validation (one pass), honour their floors, and are kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.calibration import (
    FUSED_WEIGHT_GRID,
    KNN_SCALE_GRID,
    SCALE_GRID,
    SLOT_GRID,
    choose_serving_rules,
    supports_calibration,
)
from training.config import TrainConfig
from training.pipeline import prepare_dataset
from training.report import new_item_share, warm_cold_report
from training.trainer import embeddings, train


@pytest.fixture
def trained(toy_dataset_dir: Path):
    config = TrainConfig(
        model="metammf_lightgcn", max_epochs=2, cold_start_fraction=0.2, seed=3,
        hparams={"embed_dim": 16, "first_hidden": 16},
    )
    dataset = prepare_dataset(toy_dataset_dir, config)
    return train(dataset, config, progress=False), dataset


def test_trainer_calibrates_and_records_the_trade_off_curve(trained) -> None:
    result, dataset = trained
    assert supports_calibration(result.model)
    calibration = result.calibration
    assert calibration is not None and calibration["chosen"] in SCALE_GRID
    assert float(result.model.cold_scale) == pytest.approx(calibration["chosen"])
    assert [c["scale"] for c in calibration["curve"]] == list(SCALE_GRID)
    best = max(c["valid"]["all"] for c in calibration["curve"])
    chosen = next(c for c in calibration["curve"] if c["scale"] == calibration["chosen"])
    assert chosen["valid"]["all"] == pytest.approx(best)
    assert result.summary()["new_item_scale"]["chosen"] == calibration["chosen"]
    # the reports are of the chosen rule, as a full ranking scores it
    users, items = embeddings(result.model)
    expected = warm_cold_report(users, items, dataset, "test")
    assert set(expected) == set(result.test_report)
    for part in ("all", "warm", "cold", "cold_among_cold"):
        assert result.test_report[part] == pytest.approx(expected[part])


def test_the_scale_decides_how_many_slots_new_items_get(trained) -> None:
    """Not monotonic in general: a new item whose raw score is negative sinks as it grows."""
    result, dataset = trained
    shares = []
    for scale in (0.1, 1.0, 10.0):
        result.model.cold_scale.fill_(scale)
        shares.append(new_item_share(*embeddings(result.model), dataset, "valid"))
    assert len(set(shares)) > 1


@pytest.mark.parametrize("floor", [0.2, 0.6])
def test_exposure_floor_is_met_on_validation(trained, floor: float) -> None:
    result, dataset = trained
    model = result.model
    out = choose_serving_rules(model, dataset, min_share=floor, with_curves=False).cold
    users, items = embeddings(model)
    share = new_item_share(users, items, dataset, "valid")
    assert share == pytest.approx(out["valid_share"])
    reachable = []
    for scale in SCALE_GRID:
        model.cold_scale.fill_(scale)
        reachable.append(new_item_share(*embeddings(model), dataset, "valid"))
    if max(reachable) >= floor:
        assert share >= floor
    else:  # unreachable: the scale closest to the floor
        assert share == pytest.approx(max(reachable))


def test_models_without_serving_rules_are_refused(toy_dataset_dir: Path) -> None:
    config = TrainConfig(model="lightgcn", max_epochs=1)
    dataset = prepare_dataset(toy_dataset_dir, config)
    result = train(dataset, config, progress=False)
    assert result.calibration is None and result.knn_calibration is None
    with pytest.raises(TypeError, match="no serving rule"):
        choose_serving_rules(result.model, dataset)
    assert torch.isfinite(embeddings(result.model)[0]).all()


def test_reserved_slots_hold_their_share_whatever_the_scale(trained) -> None:
    result, dataset = trained
    for scale in (0.01, 1.0):
        result.model.cold_scale.fill_(scale)
        users, items = embeddings(result.model)
        plain = new_item_share(users, items, dataset, "valid")
        slotted = new_item_share(users, items, dataset, "valid", slot_share=0.3)
        assert slotted >= max(plain, 0.3) - 1e-9
    plain = warm_cold_report(users, items, dataset, "test")
    slotted = warm_cold_report(users, items, dataset, "test", slot_share=0.1)
    # the ranking among new items is the same; only the shared lists change
    assert slotted["cold_among_cold"] == plain["cold_among_cold"]
    assert slotted["cold"]["recall@20"] >= plain["cold"]["recall@20"]


def test_trainer_scores_lists_with_the_configured_slots(toy_dataset_dir: Path) -> None:
    config = TrainConfig(
        model="metammf_lightgcn", max_epochs=2, cold_start_fraction=0.2, seed=3,
        new_item_slots=0.1, hparams={"embed_dim": 16, "first_hidden": 16},
    )
    dataset = prepare_dataset(toy_dataset_dir, config)
    result = train(dataset, config, progress=False)
    assert result.test_report["cold_share@20"] >= 0.1
    assert result.calibration["slot_share"] == 0.1 and result.slot_share == 0.1
    curve = {c["slot_share"]: c for c in result.calibration["slot_curve"]}
    assert set(curve) == set(SLOT_GRID)
    assert curve[0.1]["test"]["all"] == pytest.approx(result.test_metrics["recall@20"])
    assert curve[0.2]["test"]["cold_share@20"] >= 0.2


def test_the_reserved_share_is_chosen_on_validation_above_its_floor(
    toy_dataset_dir: Path,
) -> None:
    config = TrainConfig(
        model="early_lightgcn", max_epochs=2, cold_start_fraction=0.2, seed=3,
        new_item_slots=0.1, choose_new_item_slots=True,
        hparams={"embed_dim": 16, "first_hidden": 16, "knn_weight": 0.5},
    )
    dataset = prepare_dataset(toy_dataset_dir, config)
    result = train(dataset, config, progress=False)
    assert result.slot_share in SLOT_GRID and result.slot_share >= 0.1
    # the choice is the best valid point at the chosen scale among the allowed shares
    allowed = [c for c in result.calibration["slot_curve"] if c["slot_share"] >= 0.1]
    best = max(c["valid"]["all"] for c in allowed)
    chosen = next(c for c in allowed if c["slot_share"] == result.slot_share)
    assert chosen["valid"]["all"] == pytest.approx(best)
    assert result.test_report["cold_share@20"] >= result.slot_share - 1e-9


def test_fused_weight_curve_is_reported_and_the_configured_weight_kept(trained) -> None:
    result, _ = trained
    curve = result.calibration["fused_weight_curve"]
    assert [c["fused_weight"] for c in curve] == list(FUSED_WEIGHT_GRID)
    assert float(result.model.new_item_fused_weight) == 1.0
    at_one = next(c for c in curve if c["fused_weight"] == 1.0)
    assert at_one["test"]["cold_among_cold"] == pytest.approx(
        result.test_report["cold_among_cold"]["recall@20"])


def test_knn_factor_is_chosen_on_validation_and_kept(toy_dataset_dir: Path) -> None:
    config = TrainConfig(
        model="early_lightgcn", max_epochs=2, seed=3, new_item_slots=0.1,
        hparams={"embed_dim": 16, "knn_weight": 0.5},
    )
    dataset = prepare_dataset(toy_dataset_dir, config)
    result = train(dataset, config, progress=False)
    knn = result.knn_calibration
    assert [c["knn_scale"] for c in knn["curve"]] == sorted(KNN_SCALE_GRID)
    best = max(c["valid"]["all"] for c in knn["curve"])
    chosen = next(c for c in knn["curve"] if c["knn_scale"] == knn["chosen"])
    assert chosen["valid"]["all"] == pytest.approx(best)
    assert float(result.model.knn_scale) == knn["chosen"]
    assert result.summary()["knn_scale"]["chosen"] == knn["chosen"]
