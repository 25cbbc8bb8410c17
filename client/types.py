"""The service's response bodies as pydantic models (extra fields are kept, so a newer service
does not break an older client)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ScoredItem(_Body):
    item_id: str
    score: float
    reserved: bool = False  # fills a reserved new-item slot: keep its position when re-sorting
    new: bool = False  # no training interactions, or added online


class Recommendation(_Body):
    user_id: str | None
    items: list[ScoredItem]
    model_version: str
    cached: bool
    source: Literal["stored", "tower", "popular"]


class ItemSummary(_Body):
    item_id: str
    title: str | None = None
    source: Literal["bundle", "online"]
    new: bool


class ItemsPage(_Body):
    items: list[ItemSummary]
    total: int
    offset: int
    limit: int


class ItemOut(_Body):
    item_id: str
    source: Literal["bundle", "online"]
    features: dict[str, list[float]] | None = None
    updated_at: float | None = None
    model_version: str


class ItemsOut(_Body):
    upserted: int
    model_version: str


class HistoryItem(_Body):
    item_id: str
    title: str | None = None
    ts: float | None = None


class UserHistory(_Body):
    user_id: str
    items: list[HistoryItem]


class InteractionOut(_Body):
    user_id: str
    item_id: str
    logged_at: float


class Ready(_Body):
    ready: bool
    reason: str | None = None
    model_version: str | None = None
    index_items: int = 0


class ReloadOut(_Body):
    model_version: str
    previous_version: str | None = None
    items: int
