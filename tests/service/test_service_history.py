"""The user tower's history for a known user: its training items, in the order they happened,
so that before any new event the tower gives the stored vector, and an event extends it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.index import IndexConfig
from service.model import ServingModel
from training.config import TrainConfig
from training.data import load_dataset
from training.pipeline import train_to_bundle


@pytest.fixture(scope="module")
def served(tiktok_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    config = TrainConfig(model="early_lightgcn", max_epochs=2, hparams={"user_dropout": 0.1})
    out = tmp_path_factory.mktemp("history") / "bundle"
    train_to_bundle(tiktok_sample, out, config, progress=False)
    return ServingModel.load(out, IndexConfig())


def test_history_is_the_training_items_in_file_order(served: ServingModel, tiktok_sample) -> None:
    dataset = load_dataset(tiktok_sample)
    rows = np.loadtxt(tiktok_sample / "tiktok.inter", dtype=np.int64, skiprows=1)
    for user in (0, 3, 42):
        in_file = [str(i) for u, i, label in rows if u == user and label == 0]
        assert served.trained_history(str(user)) == list(dict.fromkeys(in_file))
        valid_and_test = {str(i) for u, i, label in rows if u == user and label > 0}
        assert not valid_and_test & set(served.trained_history(str(user)))
        assert valid_and_test <= served.seen(str(user))  # still never recommended
    assert dataset.train_time is not None


def test_before_any_event_the_tower_reproduces_the_stored_vector(served: ServingModel) -> None:
    differences = []
    for user in served.bundle.user_ids[:300]:
        history = served.trained_history(user)
        if not 0 < len(history) <= served.history_len:
            continue
        states = [served.history_state(i) for i in history]
        row = served.user_rows[user]
        tower = served.user_tower(states, served.user_states[row], served.user_state_dim)
        differences.append(np.abs(tower - served.bundle.user_embeddings[row]).max())
        assert served.user_vector(user)[1] == "stored"
    assert len(differences) > 200 and max(differences) < 1e-4
