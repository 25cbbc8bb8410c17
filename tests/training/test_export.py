"""ONNX towers against the torch model they were exported from."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import bundle as bf
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.data import load_dataset
from training.export import ExportError, export_bundle
from training.pipeline import train_to_bundle

TOLERANCE = 1e-4


DROPOUTS = {
    "metammf_gcn": {"id_dropout": 0.2, "user_dropout": 0.2},
    "metammf_lightgcn": {"user_dropout": 0.2},
}


def _train(data: Path, out: Path, model: str = "metammf_gcn", **config):
    hparams = config.pop("hparams", DROPOUTS.get(model, {}))
    epochs = config.pop("max_epochs", 2)
    cfg = TrainConfig(model=model, max_epochs=epochs, hparams=hparams, **config)
    return train_to_bundle(data, out, cfg, progress=False)


def _run_user_tower(bundle: bf.Bundle, users: np.ndarray, histories: list[np.ndarray],
                    known: bool = True) -> np.ndarray:
    states = np.load(bundle.file(bf.ITEM_STATES))
    length = max(len(h) for h in histories)
    history = np.zeros((len(users), length, states.shape[1]), dtype=np.float32)
    mask = np.zeros((len(users), length), dtype=np.float32)
    for row, items in enumerate(histories):
        history[row, : len(items)] = states[items]
        mask[row, : len(items)] = 1.0
    user_states = np.load(bundle.file(bf.USER_STATES))[users]
    session = ort.InferenceSession(str(bundle.file(bf.USER_TOWER)))
    return session.run(None, {
        "history_state": history,
        "history_mask": mask,
        "user_state": user_states if known else np.zeros_like(user_states),
        "user_known": np.full((len(users), 1), float(known), dtype=np.float32),
    })[0]


def _check_parity(data_dir: Path, out: Path, n: int, model: str = "metammf_gcn") -> None:
    _, path = _train(data_dir, out, model=model, cold_start_fraction=0.1, max_epochs=1)
    _check_parity_of_bundle(data_dir, path, n)


def _check_parity_of_bundle(data_dir: Path, path: Path, n: int = 1000) -> None:
    bundle = bf.load_bundle(path)
    model, _ = load_checkpoint(bundle.file(bf.WEIGHTS))
    dataset = load_dataset(data_dir)
    fraction = bundle.manifest.config["cold_start_fraction"]
    if fraction:
        dataset = dataset.with_cold_items(fraction)
    features = dataset.feature_matrix()
    items = np.arange(min(n, dataset.num_items))

    item_session = ort.InferenceSession(str(bundle.file(bf.ITEM_TOWER)))
    embedding, _ = item_session.run(None, {"features": features[items]})
    with torch.no_grad():
        expected = model.embed_new_items(torch.as_tensor(features[items])).numpy()
    assert np.abs(embedding - expected).max() <= TOLERANCE
    # cold items were never trained on: the bundle's vectors for them are the item tower's
    cold = dataset.cold_items
    if len(cold):
        cold_embedding, _ = item_session.run(None, {"features": features[cold]})
        assert np.abs(cold_embedding - bundle.item_embeddings[cold]).max() <= TOLERANCE

    train = dataset.matrix("train")
    users = np.array([u for u in range(dataset.num_users) if train[u].nnz][:n])
    histories = [train[u].indices for u in users]
    towers = _run_user_tower(bundle, users, histories)
    assert np.abs(towers - bundle.user_embeddings[users]).max() <= TOLERANCE


EXPORTED = ("metammf_gcn", "metammf_lightgcn")


@pytest.mark.parametrize("model", EXPORTED)
def test_towers_match_torch_on_a_toy_dataset(
    model: str, toy_dataset_dir: Path, tmp_path: Path
) -> None:
    _check_parity(toy_dataset_dir, tmp_path / "b", n=1000, model=model)


@pytest.mark.parametrize("source", ["features", "fused"])
def test_item_graph_towers_place_new_items_as_torch_does(
    source: str, toy_dataset_dir: Path, tmp_path: Path
) -> None:
    """The item tower finds a new item's content neighbours among the catalogue itself."""
    hparams = {"embed_dim": 16, "content_dim": 8, "knn_weight": 1.0, "item_graph_k": 4,
               "item_graph_source": source, "user_dropout": 0.2}
    _, path = _train(toy_dataset_dir, tmp_path / "b", model="early_lightgcn", hparams=hparams,
                     cold_start_fraction=0.2)
    _check_parity_of_bundle(toy_dataset_dir, path)


def test_recency_weighted_user_tower_reads_histories_oldest_first(
    toy_dataset_dir: Path, tmp_path: Path
) -> None:
    hparams = {"embed_dim": 16, "content_dim": 8, "knn_weight": 1.0, "history_decay": 0.5}
    _, path = _train(toy_dataset_dir, tmp_path / "b", model="early_lightgcn", hparams=hparams)
    bundle = bf.load_bundle(path)
    dataset = load_dataset(toy_dataset_dir)
    order = np.argsort(dataset.train_time, kind="stable")
    rows = dataset.train[order]
    users = np.unique(rows[:, 0])[:50]
    histories = [rows[rows[:, 0] == u, 1] for u in users]  # oldest first
    towers = _run_user_tower(bundle, users, histories)
    assert np.abs(towers - bundle.user_embeddings[users]).max() <= TOLERANCE


def test_propagate_combination_towers_match_torch(toy_dataset_dir: Path, tmp_path: Path) -> None:
    hparams = {"combine": "propagate", "user_dropout": 0.2}
    _, path = _train(toy_dataset_dir, tmp_path / "b", model="metammf_lightgcn", hparams=hparams)
    _check_parity_of_bundle(toy_dataset_dir, path)


@pytest.mark.slow
@pytest.mark.dataset
@pytest.mark.parametrize("model", EXPORTED)
def test_towers_match_torch_on_1000_real_tiktok_items_and_users(
    model: str, tiktok_dir: Path, tmp_path: Path
) -> None:
    _check_parity(tiktok_dir, tmp_path / "b", n=1000, model=model)


def test_unknown_user_tower_uses_the_learned_vector(toy_dataset_dir: Path, tmp_path: Path) -> None:
    result, path = _train(toy_dataset_dir, tmp_path / "b")
    bundle = bf.load_bundle(path)
    history = [np.array([1, 2, 3])]
    anonymous = _run_user_tower(bundle, np.array([0]), history, known=False)
    model = result.model.eval()
    with torch.no_grad():
        users = model.unknown_user.unsqueeze(0)
        layers = model.all_layers()
        for layer in range(model.num_layers):
            mean = layers[layer][1][[1, 2, 3]].mean(0, keepdim=True)
            users = model.sage.user_step(layer, users, mean)
    assert np.abs(anonymous - users.numpy()).max() <= TOLERANCE
    known = _run_user_tower(bundle, np.array([0]), history, known=True)
    assert np.abs(anonymous - known).max() > 1e-3  # the stored user state matters


def test_towers_have_dynamic_batch_and_history_axes(toy_dataset_dir: Path, tmp_path: Path) -> None:
    _, path = _train(toy_dataset_dir, tmp_path / "b")
    bundle = bf.load_bundle(path)
    features = load_dataset(toy_dataset_dir).feature_matrix()
    session = ort.InferenceSession(str(bundle.file(bf.ITEM_TOWER)))
    for batch in (1, 7, 33):
        embedding, state = session.run(None, {"features": features[:batch]})
        assert embedding.shape == (batch, 64) and state.shape == (batch, 128)
    for length in (1, 5, 60):
        histories = [np.arange(length) % 40, np.arange(1)]
        assert _run_user_tower(bundle, np.array([0, 1]), histories).shape == (2, 64)


def test_models_without_towers_are_refused_clearly(toy_dataset_dir: Path, tmp_path: Path) -> None:
    _, path = _train(toy_dataset_dir, tmp_path / "b", model="lightgcn", hparams={})
    assert not bf.load_bundle(path).has(bf.ITEM_TOWER)
    with pytest.raises(ExportError, match="no feature path"):
        export_bundle(path)


def test_mean_readout_and_standardized_towers_match_torch(
    toy_dataset_dir: Path, tmp_path: Path
) -> None:
    hparams = {"id_dropout": 0.2, "user_dropout": 0.2, "readout": "mean", "standardize": True}
    _, path = _train(toy_dataset_dir, tmp_path / "b", hparams=hparams)
    _check_parity_of_bundle(toy_dataset_dir, path)
