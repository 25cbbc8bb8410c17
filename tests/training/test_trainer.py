"""The trainer on a dataset with planted structure: it must learn it, reproducibly."""

from pathlib import Path

import numpy as np
import pytest

from training.config import TrainConfig
from training.data import load_dataset
from training.trainer import evaluate_split, train


def _planted(folder: Path, groups: int = 4, users_per_group: int = 15, items_per_group: int = 10):
    """Each group of users interacts only with its own block of items (features reveal it)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    lines = ["userID\titemID\tx_label"]
    for group in range(groups):
        block = np.arange(items_per_group) + group * items_per_group
        for member in range(users_per_group):
            user = group * users_per_group + member
            for position, item in enumerate(rng.permutation(block)[:6]):
                lines.append(f"{user}\t{item}\t{2 if position == 0 else 1 if position == 1 else 0}")
    (folder / "planted.inter").write_text("\n".join(lines) + "\n")
    num_items = groups * items_per_group
    signal = np.repeat(np.eye(groups), items_per_group, axis=0)
    features = np.hstack([signal, 0.1 * rng.normal(size=(num_items, 4))])
    np.save(folder / "image_feat.npy", features.astype(np.float16))
    return folder


@pytest.fixture
def planted(tmp_path: Path):
    return load_dataset(_planted(tmp_path / "planted"))


@pytest.mark.parametrize("model", ["bpr", "lightgcn", "metammf_gcn"])
def test_models_learn_the_planted_groups(planted, model: str) -> None:
    config = TrainConfig(model=model, max_epochs=40, batch_size=64, lr=0.01, patience=40)
    result = train(planted, config, progress=False)
    # 10 items per group, 4 of them seen: a random ranking of 36 candidates hits ~28% at 10
    assert result.test_metrics["recall@10"] > 0.6, result.test_metrics


def test_same_seed_same_result(planted) -> None:
    config = TrainConfig(model="metammf_gcn", max_epochs=3, batch_size=64, seed=5)
    first = train(planted, config, progress=False)
    second = train(planted, config, progress=False)
    assert first.test_metrics == second.test_metrics
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]


def test_early_stopping_restores_the_best_epoch(planted) -> None:
    # lr so high the model diverges after its best epoch: patience must stop it early
    config = TrainConfig(model="bpr", max_epochs=60, batch_size=64, lr=0.01, patience=3)
    result = train(planted, config, progress=False)
    assert result.epochs_run < 60, "patience never stopped the run: the test proves nothing"
    assert result.epochs_run == result.best_epoch + 3
    best = max(h["recall@20"] for h in result.history)
    assert result.valid_metrics["recall@20"] == best
    assert evaluate_split(result.model, planted, "valid")["recall@20"] == best


def test_cold_items_are_scored_from_features(planted) -> None:
    cold = planted.with_cold_items(0.2, seed=3)
    config = TrainConfig(
        model="metammf_gcn",
        max_epochs=40,
        batch_size=64,
        lr=0.01,
        patience=40,
        hparams={"id_dropout": 0.3},
    )
    result = train(cold, config, progress=False)
    assert result.cold_metrics is not None and result.cold_metrics["users"] > 0
    # features carry the group, so held-out items must rank far above chance (10/36 at 10)
    assert result.cold_metrics["recall@10"] > 0.5, result.cold_metrics


def test_l2_scope_all_penalises_every_parameter(planted) -> None:
    import torch

    from training.trainer import _l2, build_for

    model = build_for(planted, TrainConfig(model="bpr"), torch.device("cpu"))
    users, items = torch.tensor([0]), torch.tensor([1, 2])
    everything = sum(p.pow(2).sum() for p in model.parameters())
    scoped = _l2(model, TrainConfig(model="bpr", l2_scope="all"), users, items)
    batch = _l2(model, TrainConfig(model="bpr"), users, items)
    assert torch.isclose(scoped, everything)
    assert batch < scoped  # only three rows of the two tables


def test_cold_only_ranking_never_shows_warm_items(planted) -> None:
    cold = planted.with_cold_items(0.2, seed=3)
    config = TrainConfig(
        model="metammf_gcn", max_epochs=2, batch_size=64, hparams={"id_dropout": 0.3}
    )
    result = train(cold, config, progress=False)
    among_new, among_all = result.cold_only_metrics, result.cold_metrics
    assert among_new["users"] == among_all["users"] > 0
    # 8 held-out items: every user's held-out test item is within the top 10 of those 8
    assert among_new["recall@10"] == 1.0
    assert among_new["recall@10"] >= among_all["recall@10"]


def test_epochs_can_be_validated_on_a_fixed_sample_of_users(planted) -> None:
    sample = planted.with_valid_sample(20, seed=1)
    assert len(np.unique(sample.valid[:, 0])) == 20
    assert set(map(tuple, sample.valid)) <= set(map(tuple, planted.valid))
    assert planted.with_valid_sample(10_000) is planted  # fewer users than asked: unchanged
    config = TrainConfig(model="lightgcn", max_epochs=3, batch_size=64, epoch_valid_users=20)
    result = train(planted, config, progress=False)
    assert {h["users"] for h in result.history} == {20}
    assert result.valid_report["all"]["users"] == len(np.unique(planted.valid[:, 0]))


def test_the_progress_bar_ends_where_early_stopping_would() -> None:
    from training.trainer import likely_last_epoch

    assert likely_last_epoch(0, 10, 500) == 10  # no improvement yet: patience epochs
    assert likely_last_epoch(37, 10, 500) == 47  # an improvement moves the end
    assert likely_last_epoch(495, 10, 500) == 500  # never past max epochs
