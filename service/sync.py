"""Keeping a loaded bundle in step with the event log: the replay when a bundle is loaded, and
the change feed that brings the other replicas' writes in between.

Both apply the store's *current* state of an item, never the change's own content, so a replica
converges to the store whatever order changes arrive in (a DELETE overtaken by a re-POST on
another replica must not remove the item). The caller holds the service's write lock.
"""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np

from bundle.layout import relayout
from eventlog.store import Change, Store, StoredItem
from service.model import ServingModel

log = logging.getLogger(__name__)
REPLAY_BATCH = 1024
FEED_GAP_S = 5.0  # how long an unfilled id of the change feed is waited for


def replay(store: Store, model: ServingModel) -> None:
    """Apply what the store holds beyond the bundle: items, deletes, then interactions."""
    ready: list[StoredItem] = []  # embedded by this bundle's tower already
    stale: list[StoredItem] = []  # embedded by another bundle: re-embed from features
    for item in store.iter_items():
        if item.deleted:
            model.apply_delete(item.item_id)
        elif item.item_id in model.item_rows and item.updated_at <= model.cutoff:
            continue  # the bundle was trained with this version of the item
        elif item.model_version == model.version and item.history_state is not None:
            ready.append(item)
        else:
            stale.append(item)
    for start in range(0, len(ready), REPLAY_BATCH):
        chunk = ready[start : start + REPLAY_BATCH]
        model.apply_items([i.item_id for i in chunk], np.stack([i.embedding for i in chunk]),
                          np.stack([i.history_state for i in chunk]))
    if stale and model.item_tower is None:
        log.warning("%d online items skipped: bundle has no item tower", len(stale))
        stale = []
    for start in range(0, len(stale), REPLAY_BATCH):
        chunk, rows = [], []
        for item in stale[start : start + REPLAY_BATCH]:
            try:
                rows.append(relayout(item.features, item.layout, model.modalities))
                chunk.append(item)
            except (KeyError, TypeError) as error:
                log.warning("online item %s skipped: features do not fit: %s",
                            item.item_id, error)
        if chunk:
            embeddings, states = model.embed(np.stack(rows))
            model.apply_items([i.item_id for i in chunk], embeddings, states)
    model.replayed_interaction = store.last_interaction_id()
    for event in store.iter_interactions(logged_after=model.cutoff):
        model.apply_interaction(event.user_id, event.item_id)


def apply_change(store: Store, model: ServingModel, change: Change) -> tuple[int, bool]:
    """``(changes applied (0 or 1), whether an item left the catalogue)`` for one feed entry."""
    if change.kind == "interaction":
        if change.ref is not None and change.ref <= model.replayed_interaction:
            return 0, False  # the bundle's replay applied it already
        model.apply_interaction(str(change.user_id), change.item_id)
        return 1, False
    # The change says which item moved, the store what it is now (module docstring).
    item = store.get_item(change.item_id)
    if item is None or item.deleted:
        model.apply_delete(change.item_id)
        return 1, True
    if item.model_version == model.version and item.history_state is not None:
        model.apply_items([item.item_id], item.embedding[None], item.history_state[None])
        return 1, False
    if model.item_tower is None or item.features is None:
        return 0, False
    try:  # written by a replica on another bundle: embed it with ours
        row = relayout(item.features, item.layout, model.modalities)
    except (KeyError, TypeError) as error:
        log.warning("online item %s skipped: features do not fit: %s", item.item_id, error)
        return 0, False
    embeddings, states = model.embed(row[None])
    model.apply_items([item.item_id], embeddings, states)
    return 1, False


class ChangeFeed:
    """One replica's position in the store's change feed.

    Ids are handed out before commit, so under concurrent writers a lower id can become
    visible after a higher one: the cursor (every change up to it is applied) stops at the
    first gap and jumps it only once it is older than ``FEED_GAP_S`` (a rolled-back write never
    fills it); changes applied beyond the cursor are remembered so none is applied twice."""

    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex  # this replica's name on its own writes
        self.cursor = 0
        self._applied: set[int] = set()
        self._gap_since: dict[int, float] = {}

    def follow(self, store: Store, model: ServingModel) -> tuple[int, bool]:
        """Apply the other replicas' changes logged since the last call: ``(how many, whether
        an item left the catalogue)``."""
        applied, deleted = 0, False
        for change in store.changes_after(self.cursor):
            if change.id in self._applied:
                continue
            if change.origin != self.origin:
                count, gone = apply_change(store, model, change)
                applied, deleted = applied + count, deleted or gone
            self._applied.add(change.id)
        now = time.monotonic()
        while self._applied:
            following = self.cursor + 1
            if following in self._applied:
                self._applied.discard(following)
                self._gap_since.pop(following, None)
                self.cursor = following
            elif now - self._gap_since.setdefault(following, now) > FEED_GAP_S:
                self.cursor = following  # never filled: skip it
            else:
                break
        return applied, deleted
