"""A typed Python client of the recommendation service (HTTP only: it imports nothing of the
project, so it installs on its own with ``pip install mmrec-service[client]``).

    from client import RecsysClient
    with RecsysClient("http://127.0.0.1:8000", api_key="secret") as recsys:
        for item in recsys.recommend("u1", k=10).items:
            print(item.item_id, item.score, item.reserved)

``AsyncRecsysClient`` has the same methods as coroutines. Every non-2xx answer raises
:class:`RecsysError` with the status and the error body.
"""

from client.api import AsyncRecsysClient, RecsysClient, RecsysError
from client.types import (
    HistoryItem,
    InteractionOut,
    ItemOut,
    ItemsOut,
    ItemsPage,
    ItemSummary,
    Ready,
    Recommendation,
    ReloadOut,
    ScoredItem,
    UserHistory,
)

__all__ = ["AsyncRecsysClient", "HistoryItem", "InteractionOut", "ItemOut", "ItemSummary",
           "ItemsOut", "ItemsPage", "Ready", "Recommendation", "RecsysClient", "RecsysError",
           "ReloadOut", "ScoredItem", "UserHistory"]
