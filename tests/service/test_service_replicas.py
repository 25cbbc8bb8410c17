"""Two uvicorn replicas sharing PostgreSQL and Redis converge through the store's change feed:
an item added on one is served by the other within the bound, and after a delete on one the
other never serves the item once the bound has passed."""

from __future__ import annotations

import random
import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from bundle.testing import FactoryBundle, features_for
from eventlog.store import Store
from tests.service.conftest import AUTH, LOCAL_REDIS, redis_reachable
from tests.service.helpers import ids, item_body

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
BOUND_S = 2.0  # the default RECSYS_FEED_POLL_S (0.5 s) plus the time to apply a change


@pytest.fixture
def shared_store():
    """The replicas' store: PostgreSQL tables under a fresh prefix, dropped afterwards."""
    store = Store(POSTGRES_URL, f"r{uuid.uuid4().hex[:10]}_")
    if not store.ping():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {LOCAL_REDIS}")
    yield store
    store.drop()
    store.close()


@pytest.fixture
def replicas(live_server, factory: FactoryBundle, shared_store: Store):
    env = {"RECSYS_DATABASE_URL": POSTGRES_URL, "RECSYS_TABLE_PREFIX": shared_store.table_prefix,
           "RECSYS_ACCESS_LOG": "false"}
    first, second = live_server(**env), live_server(**env)
    yield httpx.Client(base_url=first.url, timeout=10), httpx.Client(base_url=second.url,
                                                                     timeout=10)


def _until(condition, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("the other replica never converged")
        time.sleep(0.02)
    return time.monotonic() - start


def test_writes_on_one_replica_reach_the_other_within_the_bound(replicas, factory) -> None:
    a, b = replicas
    # items every user ranks near the top: embeddings along the users' mean, with a large norm
    mean = factory.user_embeddings.mean(axis=0)
    largest = np.linalg.norm(factory.item_embeddings, axis=1).max()
    target = 10 * largest * mean / np.linalg.norm(mean)
    delays = []
    for n in range(10):
        body = {"items": [item_body(factory, f"fresh{n}", features_for(factory, target))]}
        assert a.post("/items", json=body, headers=AUTH).status_code == 200
        delays.append(_until(lambda n=n: b.get(f"/items/fresh{n}").status_code == 200))
    assert max(delays) < BOUND_S, delays
    assert b.post("/recommend", json={"history": ["fresh0"], "k": 5}).status_code == 200
    assert "fresh0" in ids(b.get("/recommend/u3?k=100").json())

    # an interaction on A: B stops recommending the item to that user (it is seen now)
    assert a.post("/interactions", json={"user_id": "u3", "item_id": "fresh0"},
                  headers=AUTH).status_code == 201
    delay = _until(lambda: "fresh0" not in ids(b.get("/recommend/u3?k=100").json()))
    assert delay < BOUND_S

    # a delete on A: once the bound has passed, B never serves the item again
    assert "fresh1" in ids(b.get("/recommend/u0?k=100").json())
    assert a.delete("/items/fresh1", headers=AUTH).status_code == 204
    time.sleep(BOUND_S)
    assert b.get("/items/fresh1").status_code == 404
    for user in range(20):
        assert "fresh1" not in ids(b.get(f"/recommend/u{user}?k=100").json())
        assert "fresh1" not in ids(b.post("/recommend", json={"history": ["i1"], "k": 100}).json())


def test_racing_deletes_and_posts_of_the_same_ids_converge_to_the_store(
    replicas, factory, shared_store: Store
) -> None:
    """Randomized DELETE, re-POST and interactions on the same few ids on both replicas at
    once: afterwards each replica serves an id exactly when the store holds it (a delete must
    not win over a later re-POST that the feed delivers first), every acknowledged interaction
    is in the store, and both replicas rank the same list for the interacting user."""
    a, b = replicas
    names = [f"race{n}" for n in range(4)]
    body = {n: {"items": [item_body(factory, n, features_for(factory, factory.item_embeddings[
        k]))]} for k, n in enumerate(names)}
    failures: list[int] = []
    acked: list[str] = []  # items of the acknowledged interactions

    def writer(client: httpx.Client, seed: int) -> None:
        draw = random.Random(seed)
        for _ in range(40):
            name, kind = draw.choice(names), draw.random()
            if kind < 0.4:
                status = client.post("/items", json=body[name], headers=AUTH).status_code
                ok = status == 200
            elif kind < 0.8:
                status = client.delete(f"/items/{name}", headers=AUTH).status_code
                ok = status in (204, 404)
            else:  # 404 when this replica does not hold the item at that moment
                status = client.post("/interactions", json={"user_id": "racer", "item_id": name},
                                     headers=AUTH).status_code
                ok = status in (201, 404)
                if status == 201:
                    acked.append(name)
            if not ok:
                failures.append(status)

    threads = [threading.Thread(target=writer, args=(client, seed))
               for seed, client in enumerate((a, b, a, b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    expected = {}
    for name in names:
        item = shared_store.get_item(name)
        expected[name] = 200 if item is not None and not item.deleted else 404
    for client in (a, b):
        _until(lambda client=client: all(client.get(f"/items/{n}").status_code == expected[n]
                                         for n in names), timeout=BOUND_S * 3)
    logged = [i.item_id for i in shared_store.iter_interactions() if i.user_id == "racer"]
    assert sorted(logged) == sorted(acked)
    if acked:  # the same history on both: the same list (a fresh exclude skips the caches)
        asks = iter(range(10**6))

        def listed(client: httpx.Client) -> list[str]:
            body = {"user_id": "racer", "k": 50, "exclude": [f"none{next(asks)}"]}
            return ids(client.post("/recommend", json=body).json())

        _until(lambda: listed(a) == listed(b), timeout=BOUND_S * 3)
