"""The snapshot the nightly job trains on: the logged catalogue and interactions as of one
moment, features laid out in the base bundle's modality order."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bundle.layout import relayout
from bundle.manifest import Modality
from eventlog.store import Store


@dataclass
class Logged:
    """What the service logged, mapped onto the base dataset's modality order."""

    items: dict[str, np.ndarray]  # external id -> raw features (latest upsert, not deleted)
    interactions: list[tuple[str, str, float, float]]  # user, item, ts, logged_at (log order)
    read_at: float


def read_logged(store: Store, modalities: list[Modality]) -> Logged:
    """Every live item (deleted ones dropped) and every interaction logged up to now."""
    read_at = time.time()
    items: dict[str, np.ndarray] = {}
    for item in store.iter_items():
        if item.deleted or item.features is None:
            items.pop(item.item_id, None)
            continue
        items[item.item_id] = relayout(item.features, item.layout, modalities)
    interactions = [
        (i.user_id, i.item_id, i.ts, i.logged_at)
        for i in store.iter_interactions()
        if i.logged_at <= read_at
    ]
    return Logged(items, interactions, read_at)
