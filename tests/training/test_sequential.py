"""Sequential models through the unchanged trainer: title fields as experts, histories in time
order, the test user having seen its validation item."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.text_fields import split_title, tokenize_fields
from training.config import TrainConfig
from training.pipeline import prepare_dataset
from training.trainer import model_inputs, train

WORDS = ["cat", "duck", "noodles", "guitar", "river", "comic", "game", "dance", "food", "car"]


@pytest.mark.parametrize("title, fields", [
    ("Spicy duck noodles # food # homemade", ("Spicy duck noodles", "food homemade")),
    ("# game # NBA tonight", ("", "game NBA tonight")),
    ("No tags here", ("No tags here", "")),
    ("a#b", ("a", "b")),
])
def test_titles_split_into_caption_and_hashtags(title: str, fields: tuple[str, str]) -> None:
    assert split_title(title) == fields


@pytest.fixture
def sequences_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """60 users walking along 30 titled items (each next item is the previous one + 1)."""
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "MicroLens-tiny"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for user in range(60):
        start, length = rng.integers(30), rng.integers(5, 9)
        lines.append(f"u{user}\t" + " ".join(str(100 + (start + k) % 30) for k in range(length)))
    (folder / "MicroLens-tiny_pairs.tsv").write_text("\n".join(lines) + "\n")
    with (folder / "MicroLens-tiny_titles.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title"])
        for item in range(30):
            writer.writerow([100 + item, f"{WORDS[item % 10]} video {item} # {WORDS[item // 3]}"])
    return folder


def test_crossan_trains_on_title_fields_with_histories_in_time_order(
    sequences_dir: Path,
) -> None:
    config = TrainConfig(model="crossan", feature_set="title_fields", lr=0.005, l2=0.0,
                         batch_size=64, max_epochs=3, patience=3, report_curves=False,
                         hparams={"embed_dim": 16, "max_length": 5, "adapter_dim": 8})
    dataset = prepare_dataset(sequences_dir, config)
    assert dataset.modality_names == ["caption", "hashtags"]
    assert dataset.modality_dims == [4 * 384, 4 * 384]

    graph, _, _ = model_inputs(dataset, config)
    first_user = (sequences_dir / "MicroLens-tiny_pairs.tsv").read_text().split("\n")[0]
    items = [int(i) - 100 for i in first_user.split("\t")[1].split()[:-2]]  # its train part
    edges = graph.edge_index[:, graph.edge_index[0] == 0]
    assert edges[1].tolist() == items  # oldest first, as in the file

    result = train(dataset, config, progress=False)
    assert result.epochs_run == 3 and 0.0 <= result.test_metrics["recall@20"] <= 1.0
    model = result.model.eval()
    with torch.no_grad():
        users, _ = model()
        after = model.user_embeddings_after(torch.as_tensor(dataset.valid))
    assert after.shape == users.shape and not torch.allclose(after, users)
    assert result.diagnostics["item_encoder"] == "adapters"
    assert all(abs(sum(row) - 1) < 1e-5 for layer in result.diagnostics["mixing_weights"]
               for row in layer)


@pytest.mark.slow
def test_a_crossan_bundle_serves_the_trained_vectors_through_its_onnx_towers(
    sequences_dir: Path, tmp_path: Path,
) -> None:
    import bundle as bf
    from service.towers import ItemTower, UserTower
    from training.pipeline import train_to_bundle

    config = TrainConfig(model="crossan", feature_set="title_fields", lr=0.005, l2=0.0,
                         batch_size=64, max_epochs=2, patience=2, report_curves=False,
                         hparams={"embed_dim": 16, "max_length": 5, "adapter_dim": 8})
    result, path = train_to_bundle(sequences_dir, tmp_path / "b", config, progress=False)
    bundle = bf.load_bundle(path)
    assert bundle.manifest.towers.max_history == 5
    dataset = prepare_dataset(sequences_dir, config)
    features = dataset.feature_matrix()

    embedding, state = ItemTower(bundle.file(bf.ITEM_TOWER))(features)
    assert np.abs(embedding - bundle.item_embeddings).max() <= 1e-4
    assert np.array_equal(embedding, state)

    # the text tower embeds the raw titles from the bundle's own tokenizer; the stored vectors
    # came from the float16 state cache, hence the looser bound
    import onnxruntime as ort

    from bundle.tokenize import load_tokenizer

    text = bundle.manifest.text_input
    assert text.fields == ["caption", "hashtags"] and bundle.has(bf.TOKENIZER)
    tokenizer = load_tokenizer(bundle.path, text.max_tokens)
    titles = json.loads((Path(dataset.source) / "titles.json").read_text())
    ids, mask = tokenize_fields(tokenizer, titles)
    session = ort.InferenceSession(str(bundle.file(bf.TEXT_TOWER)))
    from_text, _, _ = session.run(None, {"input_ids": ids, "attention_mask": mask})
    scale = np.abs(bundle.item_embeddings).max()
    assert np.abs(from_text - bundle.item_embeddings).max() <= 0.01 * scale

    # a user's stored vector is the user tower over its whole known history, oldest first
    user_tower = UserTower(bundle.file(bf.USER_TOWER))
    lines = (sequences_dir / "MicroLens-tiny_pairs.tsv").read_text().split("\n")
    for user, line in enumerate(lines[:20]):
        items = [int(i) - 100 for i in line.split("\t")[1].split()]
        vector = user_tower([embedding[i] for i in items], np.zeros(1, np.float32), 1)
        assert np.abs(vector - bundle.user_embeddings[user]).max() <= 1e-4, user

    # the service embeds a new item from its raw text and serves it
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(bundle=path, database_url=f"sqlite:///{tmp_path / 'store.db'}",
                        redis_url=None, api_key="k", text_tower_precision="fp32")
    title = "a brand new cat video # cat # video"
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": "k"}
        response = client.post("/items", json={"items": [{"item_id": "new", "text": title}]},
                               headers=headers)
        assert response.status_code == 200, response.text
        stored = client.get("/items/new").json()
        assert stored["source"] == "online" and set(stored["features"]) == set(text.fields)
        new_ids, new_mask = tokenize_fields(tokenizer, [title])
        expected = session.run(None, {"input_ids": new_ids, "attention_mask": new_mask})[0]
        vector = user_tower([expected[0]], np.zeros(1, np.float32), 1)  # a one-item history
        ranked = client.post("/recommend", json={"history": ["new"], "k": 5}).json()
        assert len(ranked["items"]) == 5
        # the posted history is the new item alone: the best bundle item for that user
        assert abs(ranked["items"][0]["score"] - float((embedding @ vector).max())) < 1e-3
        both = {"item_id": "x", "text": title, "features": {"caption": [0.0]}}
        assert client.post("/items", json={"items": [both]}, headers=headers).status_code == 422

    # texts run in length-sorted chunks: each gets what it gets alone (padding is masked)
    from service.towers import TextTower

    fp32 = TextTower(bundle.file(bf.TEXT_TOWER), bundle.path, text.max_tokens, chunk_size=4)
    mixed = titles[:9] + ["x", "a much longer title than the others # with # many # tags"]
    together = fp32(mixed)[0]
    alone = np.concatenate([fp32([t])[0] for t in mixed])
    assert np.abs(together - alone).max() <= 1e-5
    # the int8 tower (the service's default) stays close to float32
    assert bundle.has(bf.TEXT_TOWER_INT8)
    int8 = TextTower(bundle.file(bf.TEXT_TOWER_INT8), bundle.path, text.max_tokens)(mixed)[0]
    cosine = (int8 * together).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(
        together, axis=1)
    assert cosine.min() >= 0.95, cosine.min()


@pytest.mark.slow
def test_the_text_item_tower_in_onnx_matches_torch_and_the_cached_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Token ids -> frozen MiniLM -> pooled kept states -> CROSSAN's item side, on real
    MicroLens titles: ONNX equals torch, and its states are the cache's (stored as float16)."""
    import io

    import onnxruntime as ort

    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    from models.base import BipartiteGraph
    from models.crossan_towers import SequentialItemTower
    from models.registry import build_model
    from models.text_tower import TextItemTower
    from training.data import default_data_dir
    from training.encoders import load_encoder
    from training.export import _onnx_bytes
    from training.feature_sets import field_states

    titles_file = default_data_dir() / "microlens-50k" / "MicroLens-50k_titles.csv"
    with titles_file.open(newline="") as handle:
        titles = [row[1] for row in list(csv.reader(handle))[1:9]]
    encoder = load_encoder("minilm")
    ids, mask = tokenize_fields(encoder.tokenizer, titles)
    torch.manual_seed(0)
    edges = torch.stack([torch.arange(20).repeat_interleave(3), torch.randint(0, 15, (60,))])
    model = build_model("crossan", BipartiteGraph(20, 15, edges), torch.randn(15, 2 * 4 * 384),
                        [1536, 1536], embed_dim=16, max_length=4).eval()
    tower = TextItemTower(encoder.model, [0, 2, 4, 6], "mean", SequentialItemTower(model)).eval()
    with torch.no_grad():
        expected, _, _ = tower(torch.as_tensor(ids), torch.as_tensor(mask))
        states = tower.states(torch.as_tensor(ids), torch.as_tensor(mask)).numpy()
    cached = field_states(titles, [0, 2, 4, 6], progress=False)
    assert np.abs(states - np.concatenate([cached["caption"], cached["hashtags"]], 1)).max() < 5e-3

    axes = {"input_ids": {0: "batch", 2: "tokens"}, "attention_mask": {0: "batch", 2: "tokens"},
            "embedding": {0: "batch"}, "history_state": {0: "batch"}}
    axes["features"] = {0: "batch"}
    onnx = _onnx_bytes(tower, (torch.as_tensor(ids), torch.as_tensor(mask)),
                       ["input_ids", "attention_mask"], ["embedding", "history_state", "features"],
                       axes)
    session = ort.InferenceSession(io.BytesIO(onnx).getvalue())
    embedding, _, features = session.run(None, {"input_ids": ids, "attention_mask": mask})
    assert np.abs(embedding - expected.numpy()).max() <= 1e-4
    assert np.abs(features - states).max() <= 1e-4

    # the int8 twin (what the service runs by default): the stated tolerance, cosine >= 0.99
    # of every item vector and of every item's states against float32
    from training.export import quantize_text_tower

    int8 = ort.InferenceSession(quantize_text_tower(onnx))
    embedding8, _, features8 = int8.run(None, {"input_ids": ids, "attention_mask": mask})

    def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    assert cosines(embedding8, embedding).min() >= 0.99
    assert cosines(features8, features).min() >= 0.99
    assert np.abs(features8 - features).max() > 1e-4  # it is quantised, not a copy


def test_per_user_ranks_give_the_leave_one_out_hit_rate_and_ndcg(sequences_dir: Path) -> None:
    from training.report import per_user_hits, per_user_ranks, warm_cold_report

    config = TrainConfig(model="sasrec", feature_set="dataset")
    dataset = prepare_dataset(sequences_dir, config)
    generator = torch.Generator().manual_seed(0)
    users = torch.randn(dataset.num_users, 8, generator=generator)
    items = torch.randn(dataset.num_items, 8, generator=generator)
    report = warm_cold_report(users, items, dataset, "test")["all"]
    ids, ranks = per_user_ranks(users, items, dataset, "test", 10)
    assert ids.size == report["users"] and 0 < (ranks < 10).sum() < ids.size
    assert (ranks < 10).mean() == pytest.approx(report["hit@10"])
    ndcg = np.where(ranks < 10, 1 / np.log2(ranks + 2), 0.0)
    assert ndcg.mean() == pytest.approx(report["ndcg@10"])
    assert np.array_equal(ranks < 10, per_user_hits(users, items, dataset, "test", 10)[1] > 0)


def test_ckd_on_crossan_distils_from_teachers_that_keep_a_user_before_every_item(
    sequences_dir: Path,
) -> None:
    from training.ckd import load_teacher, train_teachers, with_ckd
    from training.config import CKDConfig

    config = TrainConfig(model="crossan", feature_set="title_fields", lr=0.005, l2=0.0,
                         batch_size=64, max_epochs=2, patience=2, report_curves=False,
                         hparams={"embed_dim": 16, "max_length": 5, "adapter_dim": 8},
                         ckd=CKDConfig(generic_triples=32))
    dataset = prepare_dataset(sequences_dir, config)
    paths = train_teachers(dataset, config, progress=False)
    scores, info = load_teacher(paths[0])
    # one context per training interaction (the user before it) and one per user (after all)
    assert scores.users.shape[0] == len(dataset.train) + dataset.num_users
    assert info["modality"] == "caption"
    result = train(dataset, config, progress=False,
                   init_model=with_ckd(dataset, config, progress=False))
    terms = result.history[-1]
    assert terms["loss_ckd_specific"] > 0 and terms["loss_ckd_generic"] > 0, terms
    assert abs(sum(result.model.loss_plugins[0].mean_weights()) - 2.0) < 1e-5
