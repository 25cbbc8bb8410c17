"""The whole service on PostgreSQL: what one process accepted, the next one replays."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from bundle.testing import FactoryBundle
from eventlog.store import Store
from service.app import create_app
from tests.service.conftest import AUTH
from tests.service.helpers import ids, item_body

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_prefix():
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    store = Store(POSTGRES_URL, prefix)
    if not store.ping():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    yield prefix
    store.drop()
    store.close()


def test_postgres_store_survives_a_restart(make_settings, factory: FactoryBundle,
                                           postgres_prefix):
    settings = make_settings(database_url=POSTGRES_URL, table_prefix=postgres_prefix,
                             redis_url="")
    with TestClient(create_app(settings)) as client:
        items = [item_body(factory, f"pg{n}", row)
                 for n, row in enumerate(factory.random_features(3, seed=21))]
        assert client.post("/items", json={"items": items}, headers=AUTH).status_code == 200
        client.post("/interactions", json={"user_id": "u2", "item_id": "pg0"}, headers=AUTH)
        client.delete("/items/pg2", headers=AUTH)
        before = client.get("/recommend/u2?k=30").json()
    with TestClient(create_app(settings)) as client:
        after = client.get("/recommend/u2?k=30").json()
        assert ids(after) == ids(before) and after["source"] == "tower"
        assert client.get("/items/pg1").json()["source"] == "online"
        assert client.get("/items/pg2").status_code == 404
