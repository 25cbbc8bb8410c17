"""Read-only views for people and pages: the live catalogue, paged and searchable
(``GET /items``), and the history the service uses for a user (``GET /users/{id}/history``).

Both read the served model's in-memory state (what recommendations are computed from) and
take titles from the store (the text of items posted as text). They run in the thread pool.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from service import schemas
from service.errors import NotFound
from service.model import ServingModel
from service.operations import RecommendationService


def live_items(model: ServingModel) -> Iterator[str]:
    """Every live item: the bundle's (not deleted, not replaced online) in the bundle's order,
    then the online ones in the order they first arrived."""
    index = model.index
    bundle_items = (i for i in model.bundle.item_ids if index.in_main(i))
    online = (i for i in list(model.online_states) if i in index)  # a copy: writers go on
    return itertools.chain(bundle_items, online)


def list_items(service: RecommendationService, offset: int, limit: int,
               q: str | None) -> schemas.ItemsPage:
    model = service.require_model()
    if q:
        titles = service.store.item_texts()
        needle = q.casefold()
        matching = [i for i in live_items(model)
                    if i.startswith(q) or needle in titles.get(i, "").casefold()]
        total, page = len(matching), matching[offset : offset + limit]
    else:
        total = len(model.index)
        page = list(itertools.islice(live_items(model), offset, offset + limit))
        titles = service.store.item_texts(page)
    return schemas.ItemsPage(
        items=[schemas.ItemSummary(item_id=i, title=titles.get(i),
                                   source="bundle" if model.index.in_main(i) else "online",
                                   new=i in model.new_index) for i in page],
        total=total, offset=offset, limit=limit)


def user_history(service: RecommendationService, user_id: str,
                 limit: int) -> schemas.UserHistory:
    """Newest first: the interactions logged after the bundle's cut-off (what the replay and
    the writes applied), then the bundle's training history of the user."""
    model = service.require_model()
    if not model.has_user(user_id):
        raise NotFound(f"unknown user {user_id!r}")
    logged = service.store.user_interactions(user_id, logged_after=model.cutoff, limit=limit)
    entries: list[tuple[str, float | None]] = [(e.item_id, e.ts) for e in logged]
    if len(entries) < limit:
        trained = model.trained_history(user_id)
        entries += [(item_id, None) for item_id in reversed(trained)][: limit - len(entries)]
    titles = service.store.item_texts(sorted({item_id for item_id, _ in entries}))
    return schemas.UserHistory(user_id=user_id, items=[
        schemas.HistoryItem(item_id=item_id, title=titles.get(item_id), ts=ts)
        for item_id, ts in entries])
