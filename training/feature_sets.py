"""Which item features a run trains on (``TrainConfig.feature_set``).

- ``dataset``: the dataset folder's own ``*_feat.npy`` files (TikTok's audio and image,
  MicroLens' MiniLM title vector).
- ``title_fields``: for CROSSAN's experts, each title split into two **fields** (not
  modalities: one text, one encoder), ``caption`` and ``hashtags``, each encoded by the frozen
  MiniLM with every hidden state pooled (:func:`training.encoders.cached_states`), and the
  states of ``state_layers`` kept: per field ``[I, len(state_layers) * 384]``.

The split rule is :func:`bundle.text_fields.split_title` (the service splits a new item's text
with the same function); an empty field is encoded by MiniLM as ``[CLS] [SEP]``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from bundle.text_fields import FIELDS, split_title
from training.data import DataError, Dataset

FEATURE_SETS = ("dataset", "title_fields")


def titles_of(dataset: Dataset) -> list[str]:
    """The raw title of every item, row = dense item id (MicroLens' derived ``titles.json``)."""
    path = Path(dataset.source) / "titles.json"
    if not path.is_file():
        raise DataError(f"{dataset.source}: no titles.json: the feature set needs item titles "
                        "(a MicroLens dataset)")
    titles = json.loads(path.read_text(encoding="utf-8"))
    if len(titles) != dataset.num_items:
        raise DataError(f"{path}: {len(titles)} titles for {dataset.num_items} items")
    return titles


def field_states(
    titles: list[str], layers: list[int], pooling: str = "mean", *, encoder: str = "minilm",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """``{field: float32 [len(titles), len(layers) * dim]}``, kept layers concatenated."""
    from training.encoders import cached_states  # lazy: the encoder stack is heavy

    fields = list(zip(*(split_title(t) for t in titles), strict=True))
    out = {}
    for name, texts in zip(FIELDS, fields, strict=True):
        states = cached_states(list(texts), encoder, pooling, progress=progress)
        if max(layers) >= states.shape[1]:
            raise ValueError(f"state_layers {layers}: the encoder has {states.shape[1]} states")
        out[name] = states[:, layers].reshape(len(titles), -1).astype(np.float32)
    return out


def with_feature_set(
    dataset: Dataset, name: str, *, layers: list[int], pooling: str = "mean",
    progress: bool = True,
) -> Dataset:
    """``dataset`` with the item features of feature set ``name``."""
    if name == "dataset":
        return dataset
    if name != "title_fields":
        raise ValueError(f"unknown feature set {name!r}; known: {', '.join(FEATURE_SETS)}")
    features = field_states(titles_of(dataset), layers, pooling, progress=progress)
    return replace(dataset, features=features)
