"""SQL store on SQLite (default) and the local PostgreSQL (skipped when unreachable)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from eventlog.store import Store, StoredItem, normalize_url

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_store() -> Store | None:
    store = Store(POSTGRES_URL, f"t{uuid.uuid4().hex[:10]}_")
    if not store.ping():
        store.close()
        return None
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        store = postgres_store()
        if store is None:
            pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    store.create()
    yield store
    if request.param == "postgresql":
        store.drop()  # unique table prefix: drop what this test created
    store.close()


def item(item_id: str, value: float, version: str = "v1") -> StoredItem:
    return StoredItem(item_id, np.full(4, value, np.float32), "a:2,b:2",
                      np.full(3, value, np.float32), np.full(2, value, np.float32), version)


def test_upsert_is_idempotent_and_replaces_by_id(store: Store):
    store.upsert_items([item("x", 1.0), item("y", 2.0)])
    store.upsert_items([item("x", 1.0)])
    store.upsert_items([item("x", 5.0, "v2")])
    stored = {i.item_id: i for i in store.iter_items()}
    assert set(stored) == {"x", "y"}
    assert np.allclose(stored["x"].features, 5.0) and stored["x"].model_version == "v2"
    assert np.allclose(stored["y"].embedding, 2.0) and stored["y"].layout == "a:2,b:2"


def test_delete_leaves_a_tombstone_and_bumps_the_catalog_generation(store: Store):
    store.upsert_items([item("x", 1.0)])
    assert store.catalog_generation() == 0
    assert store.delete_item("x") == 1
    assert store.delete_item("bundle-item") == 2  # bundle items get a tombstone too
    assert store.catalog_generation() == 2
    tombstones = {i.item_id: i for i in store.iter_items()}
    assert tombstones["x"].deleted and tombstones["x"].features is None
    assert tombstones["bundle-item"].deleted
    store.upsert_items([item("x", 3.0)])  # re-adding an item revives it
    assert not store.get_item("x").deleted


def test_interactions_replay_in_order_after_a_time(store: Store):
    first = store.add_interaction("u1", "a", ts=10.0)
    store.add_interaction("u1", "b")
    store.add_interaction("u2", "a", ts=30.0)
    events = list(store.iter_interactions())
    assert [(e.user_id, e.item_id) for e in events] == [("u1", "a"), ("u1", "b"), ("u2", "a")]
    assert events[0].ts == 10.0
    assert [e.item_id for e in store.iter_interactions(logged_after=first)] == ["b", "a"]


def test_store_reports_reachability(tmp_path: Path):
    assert Store(f"sqlite:///{tmp_path / 'ok.db'}").ping()
    assert not Store("postgresql://nobody@127.0.0.1:1/none").ping()


def test_postgres_urls_use_psycopg3():
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
