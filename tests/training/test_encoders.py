"""Frozen text encoders: tokenisation parity, pooled states, the on-disk cache, a tiny CLIP."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from training.data import default_data_dir
from training.encoders import (
    EncoderError,
    EncoderSpec,
    cached_states,
    get_encoder_spec,
    item_features,
    load_encoder,
    load_tokenizer,
    text_key,
    tokenize,
)
from training.encoders.cache import StateTable

MICROLENS_TITLES = default_data_dir() / "microlens-50k" / "MicroLens-50k_titles.csv"
TEXTS = ["Cute cat jumps into a box # pets", "spicy noodles, homemade", ""]


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write into the real ~/.cache from a test."""
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm")


class CountingEncoder:
    """Wraps a loaded encoder and records every batch of texts it is asked to encode."""

    def __init__(self, inner) -> None:
        self.inner, self.spec = inner, inner.spec
        self.num_states, self.dim = inner.num_states, inner.dim
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str], progress=None) -> dict[str, np.ndarray]:
        self.calls.append(list(texts))
        return self.inner.encode(texts, progress)


def _assert_same_ids_as_transformers(texts: list[str]) -> None:
    from transformers import AutoTokenizer

    folder = get_encoder_spec("minilm").folder()
    ids, mask = tokenize(load_tokenizer(folder, 64), texts)
    reference = AutoTokenizer.from_pretrained(folder, local_files_only=True)(
        texts, truncation=True, max_length=64, padding="max_length"
    )
    assert ids.shape == mask.shape == (len(texts), 64)
    np.testing.assert_array_equal(ids, np.array(reference["input_ids"]))
    np.testing.assert_array_equal(mask, np.array(reference["attention_mask"]))


@pytest.mark.dataset
def test_tokenizer_matches_transformers_on_real_titles() -> None:
    if not MICROLENS_TITLES.is_file():
        pytest.skip(f"MicroLens titles not found at {MICROLENS_TITLES}")
    with MICROLENS_TITLES.open(encoding="utf-8", newline="") as handle:
        titles = [row["title"] for row in csv.DictReader(handle)]
    sample = titles[:4] + [max(titles, key=len)]  # the longest one is truncated
    _assert_same_ids_as_transformers(sample)


def test_tokenizer_matches_transformers_on_edge_cases() -> None:
    _assert_same_ids_as_transformers(
        ["", "Émoji 🍜 MIXED case #tag!", "word " * 100, "中文标题 and English", "a\tb\nc"]
    )


def test_states_cover_every_layer_with_two_poolings(minilm) -> None:
    pooled = minilm.encode(TEXTS)
    assert set(pooled) == {"mean", "cls"}
    for states in pooled.values():
        assert states.shape == (3, 7, 384) and states.dtype == np.float16
        assert np.isfinite(states).all()
    assert not np.allclose(pooled["mean"], pooled["cls"], atol=1e-2)
    assert not np.allclose(pooled["mean"][:, 0], pooled["mean"][:, -1], atol=1e-2)


def test_mean_pooling_matches_the_plain_model_output(minilm) -> None:
    import torch
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(minilm.spec.folder(), local_files_only=True)(
        TEXTS[:1], return_tensors="pt"
    )
    with torch.inference_mode():
        last = minilm.model(**tokens).last_hidden_state.mean(dim=1)[0].numpy()
    np.testing.assert_allclose(minilm.encode(TEXTS[:1])["mean"][0, -1], last, atol=2e-3)


def test_batch_neighbours_do_not_change_a_texts_states(minilm) -> None:
    alone = minilm.encode(["short title"])["mean"][0]
    beside_long = minilm.encode(["short title", "a much longer title " * 8])["mean"][0]
    np.testing.assert_allclose(alone.astype(np.float32), beside_long, atol=2e-3)


def test_cache_round_trip_hits_and_changed_text(minilm, tmp_path: Path) -> None:
    counting = CountingEncoder(minilm)
    first = cached_states(TEXTS, counting, "mean", progress=False)
    assert counting.calls == [TEXTS]
    assert first.dtype == np.float16 and first.shape == (3, 7, 384)

    table = StateTable.of(minilm.spec, "mean")
    assert table.folder == tmp_path / "cache" / "encoders" / "minilm" / "mean-len64"
    keys, states = table.read()
    assert [k.decode() for k in keys] == [text_key(t) for t in TEXTS]
    assert states.dtype == np.float16
    np.testing.assert_array_equal(np.load(table.states_file), first)
    assert json.loads((table.folder / "meta.json").read_text())["num_states"] == 7

    again = cached_states(list(reversed(TEXTS)), counting, "mean", progress=False)
    cls = cached_states(TEXTS, counting, "cls", progress=False)  # same forward pass
    assert len(counting.calls) == 1
    np.testing.assert_array_equal(again, first[::-1])
    assert not np.array_equal(cls, first)

    changed = [TEXTS[0], TEXTS[1] + "!", TEXTS[2]]
    assert text_key(changed[1]) != text_key(TEXTS[1])
    updated = cached_states(changed, counting, "mean", progress=False)
    assert counting.calls[1:] == [[changed[1]]]
    np.testing.assert_array_equal(updated[[0, 2]], first[[0, 2]])
    assert len(table.read()[0]) == 4


def test_item_features_default_to_last_layer_mean(minilm) -> None:
    features = item_features(TEXTS, minilm, progress=False)
    assert features.shape == (3, 384) and features.dtype == np.float32
    expected = cached_states(TEXTS, minilm, "mean", progress=False)[:, -1]
    np.testing.assert_array_equal(features, expected.astype(np.float32))
    with pytest.raises(ValueError, match="layer"):
        item_features(TEXTS, minilm, layer=7, progress=False)


def test_reader_ignores_rows_written_before_their_keys(tmp_path: Path) -> None:
    """A crash between the states and the keys replace leaves extra rows: they are ignored."""
    table = StateTable(tmp_path / "t")
    rows = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)
    assert table.append(["a", "b"], rows, meta={}) == 2
    assert table.append(["b"], rows[:1], meta={}) == 0
    np.save(table.states_file, np.concatenate([rows, rows]))  # states replaced, keys not
    keys, states = table.read()
    assert len(keys) == 2
    np.testing.assert_array_equal(states, rows)
    with pytest.raises(EncoderError, match="stored states"):
        table.append(["c"], np.zeros((1, 2, 2), np.float16), meta={})


def test_unknown_encoder_and_pooling_are_refused() -> None:
    with pytest.raises(EncoderError, match="unknown encoder"):
        get_encoder_spec("nope")
    with pytest.raises(ValueError, match="pools"):
        cached_states(TEXTS, "minilm", "max")
    missing = EncoderSpec("ghost", "text", lambda: Path("/nonexistent"))
    with pytest.raises(EncoderError, match="lacks config.json"):
        load_encoder(missing)


def _tiny_clip(folder: Path) -> Path:
    """A randomly initialised CLIP a few kB large, saved like a real one (weights, tokenizer,
    image processor), so the loading code is exercised on exactly the files it would meet."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, "a": 4, "photo": 5, "of": 6}
    vocab.update({"cat": 7, "dog": 8, "on": 9, "grass": 10})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    ).save_pretrained(folder)
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={
            **small,
            "num_attention_heads": 2,
            "vocab_size": len(vocab),
            "max_position_embeddings": 16,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "pad_token_id": 0,
        },
        vision_config={**small, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(folder)
    # the PIL-backed processor where transformers has one (no torchvision needed)
    processor = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return folder


def test_tiny_clip_embeds_texts_and_images(tmp_path: Path, monkeypatch) -> None:
    import torch
    from PIL import Image

    monkeypatch.setenv("RECSYS_CLIP_DIR", str(_tiny_clip(tmp_path / "clip")))
    clip = load_encoder(get_encoder_spec("clip"))  # the registry entry, from that folder
    texts = ["a photo of a cat", "a dog on grass"]
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, size=(40 + 8 * i, 48, 3), dtype=np.uint8))
        for i in range(2)
    ]
    text_emb, image_emb = clip.encode_text(texts), clip.encode_images(images)
    assert text_emb.shape == image_emb.shape == (2, 8)
    assert text_emb.dtype == image_emb.dtype == np.float32
    assert not np.allclose(text_emb[0], text_emb[1]) and not np.allclose(image_emb[0], image_emb[1])

    tokens = clip.tokenizer(texts, padding=True, return_tensors="pt")
    pixels = clip.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = clip.model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=pixels,
        )
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(unit(text_emb), out.text_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(unit(image_emb), out.image_embeds.numpy(), atol=1e-5)

    cached = cached_states(texts, clip, "embed", progress=False)
    assert cached.shape == (2, 1, 8)
    np.testing.assert_array_equal(cached[:, 0], text_emb.astype(np.float16))


@pytest.mark.dataset
def test_a_text_bundles_tokenizer_matches_training_on_1000_real_titles(tmp_path) -> None:
    """The service tokenises with the bundle's tokenizer.json alone (no tokenizer_config.json
    beside it): the ids of 1,000 real titles' fields equal training's and transformers'."""
    import shutil

    from bundle.text_fields import split_title

    if not MICROLENS_TITLES.is_file():
        pytest.skip(f"MicroLens titles not found at {MICROLENS_TITLES}")
    with MICROLENS_TITLES.open(encoding="utf-8", newline="") as handle:
        titles = [row["title"] for row in csv.DictReader(handle)][:1000]
    folder = get_encoder_spec("minilm").folder()
    shutil.copy(folder / "tokenizer.json", tmp_path / "tokenizer.json")  # as a bundle ships it
    texts = [field for title in titles for field in split_title(title)]
    served = tokenize(load_tokenizer(tmp_path, 64), texts)
    trained = tokenize(load_tokenizer(folder, 64), texts)
    for a, b in zip(served, trained, strict=True):
        np.testing.assert_array_equal(a, b)
    _assert_same_ids_as_transformers(texts)
