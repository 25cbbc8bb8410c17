"""Small helpers shared by the API and end-to-end tests (``features_for`` lives with the
factory bundle in :mod:`bundle.testing`: the benchmarks use it too)."""

from __future__ import annotations

import numpy as np

from bundle.testing import FactoryBundle


def item_body(factory: FactoryBundle, item_id: str, features: np.ndarray) -> dict:
    return {"item_id": item_id, "features": factory.payload(features)}


def ids(response_json: dict) -> list[str]:
    return [entry["item_id"] for entry in response_json["items"]]


def brute_force(factory: FactoryBundle, vector: np.ndarray, k: int, exclude=(),
                extra: dict[str, np.ndarray] | None = None, deleted=()) -> list[str]:
    """Top-k over the bundle items plus ``extra`` online items, by exact inner product."""
    catalog = dict(zip(factory.item_ids, factory.item_embeddings, strict=True))
    catalog.update(extra or {})
    for item_id in deleted:
        catalog.pop(item_id, None)
    names = [n for n in catalog if n not in set(exclude)]
    scores = np.stack([catalog[n] for n in names]) @ vector
    return [names[i] for i in np.argsort(-scores, kind="stable")[:k]]
