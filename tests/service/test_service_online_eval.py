"""Online evaluation (issue 23, item 7): served lists logged compactly off the request path, and
the interactions after them scored as hits per model version and day, warm and new apart."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from bundle.testing import make_bundle
from eventlog.served import ServedList, add_served, iter_served, online_hit_rates, prune_served
from eventlog.store import Store
from service.app import create_app
from tests.service.conftest import AUTH

DAY = 86_400.0
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


@pytest.fixture
def store(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'eval.db'}")
    store.create()
    yield store
    store.close()


def log_at(store: Store, user: str, item: str, at: float) -> None:
    """An interaction logged at a given time (the store stamps ``logged_at`` with now)."""
    with store.engine.begin() as conn:
        conn.execute(store.interactions.insert().values(user_id=user, item_id=item, ts=at,
                                                        logged_at=at))


def test_hits_are_counted_per_version_and_day_warm_and_new_apart(store):
    add_served(store, [
        ServedList("u1", "v1", T0, ("a", "b", "c"), "wnr"),
        ServedList("u2", "v1", T0, ("a", "d"), "ww"),
        ServedList("u3", "v2", T0 + 10, ("a", "e"), "wn"),
        ServedList("u1", "v2", T0 + DAY, ("z",), "w"),  # the next day, another version
    ])
    log_at(store, "u1", "a", T0 + 1)  # warm hit, v1
    log_at(store, "u1", "c", T0 + 2)  # reserved new hit, v1
    log_at(store, "u2", "x", T0 + 3)  # miss, v1
    log_at(store, "u3", "e", T0 + 5)  # before its list: not counted
    log_at(store, "u3", "e", T0 + 20)  # new hit, v2
    log_at(store, "u4", "a", T0 + 20)  # no list served to u4: not counted
    log_at(store, "u2", "d", T0 + 2 * DAY)  # past the window: not counted
    log_at(store, "u1", "b", T0 + DAY + 5)  # v2's list is the latest: b is not in it
    rows = online_hit_rates(store, T0 - 1, T0 + 3 * DAY)
    day0, day1 = "2023-11-14", "2023-11-15"
    by_key = {(r["model_version"], r["day"]): r for r in rows}
    assert set(by_key) == {("v1", day0), ("v2", day0), ("v2", day1)}
    v1 = by_key[("v1", day0)]
    assert (v1["lists"], v1["interactions"], v1["hits"], v1["warm_hits"], v1["new_hits"],
            v1["reserved_hits"]) == (2, 3, 2, 1, 1, 1)
    assert v1["hit_rate"] == pytest.approx(2 / 3)
    assert v1["warm_hit_rate"] + v1["new_hit_rate"] == pytest.approx(v1["hit_rate"])
    v2 = by_key[("v2", day0)]
    assert (v2["interactions"], v2["hits"], v2["new_hits"], v2["warm_hits"]) == (1, 1, 1, 0)
    late = by_key[("v2", day1)]
    assert (late["lists"], late["interactions"], late["hits"]) == (1, 1, 0)
    only = online_hit_rates(store, T0 - 1, T0 + 3 * DAY, version="v1", by_day=False)
    assert [(r["model_version"], r["day"], r["hits"]) for r in only] == [("v1", None, 2)]
    # a shorter window drops the events that came too long after their list
    assert online_hit_rates(store, T0 - 1, T0 + 3 * DAY, window_s=1.5, version="v1",
                            by_day=False)[0]["interactions"] == 1


def test_an_item_in_an_earlier_list_of_the_same_version_is_a_hit(store):
    add_served(store, [ServedList("u1", "v1", T0, ("a",), "n"),
                       ServedList("u1", "v1", T0 + 1, ("b",), "w")])  # page two, say
    log_at(store, "u1", "a", T0 + 2)
    [row] = online_hit_rates(store, T0 - 1, T0 + 10, by_day=False)
    assert (row["interactions"], row["hits"], row["new_hits"]) == (1, 1, 1)


def test_old_served_lists_are_pruned(store):
    add_served(store, [ServedList("u1", "v1", T0, ("a",), "w"),
                       ServedList("u1", "v1", T0 + 100, ("b",), "w")])
    assert prune_served(store, T0 + 50) == 1
    assert [s.items for s in iter_served(store)] == [("b",)]


def test_the_service_logs_served_lists_and_scores_them(make_settings, tmp_path):
    plain = make_bundle(tmp_path / "plain")  # new items that u1 likes least: reserved slots
    disliked = np.argsort(plain.item_embeddings @ plain.user_embeddings[1])[:40]
    factory = make_bundle(tmp_path / "slots", new_items=[plain.item_ids[i] for i in disliked],
                          new_item_slots=0.1)
    settings = make_settings(bundle=factory.path, served_sample=1.0, online_eval_s=0)
    with TestClient(create_app(settings)) as client:
        service = client.app.state.service
        first = client.get("/recommend/u1?k=10").json()
        assert client.get("/recommend/u1?k=10").json()["cached"]  # a hit is logged too
        client.get("/recommend/u1?k=10")  # the very same body again: logged once
        client.post("/recommend", json={"history": ["i3"], "k": 5})  # no user: not logged
        assert service.served.flush() == 2
        client.get("/recommend/u1?k=9")  # another list for the same user is logged
        assert service.served.flush() == 1
        logged = list(iter_served(service.store))
        assert [(s.user_id, s.model_version) for s in logged] == [("u1", "v1")] * 3
        assert len(logged[2].items) == 9
        flags = "".join("r" if i["reserved"] else "n" if i["new"] else "w"
                        for i in first["items"])
        assert logged[0].items == tuple(i["item_id"] for i in first["items"])
        assert logged[0].flags == flags and "r" in flags
        reserved = next(i["item_id"] for i in first["items"] if i["reserved"])
        warm = next(i["item_id"] for i in first["items"] if not i["new"])
        unlisted = next(i for i in factory.item_ids if i not in logged[0].items)
        for item in (reserved, warm, unlisted):
            body = {"user_id": "u1", "item_id": item}
            assert client.post("/interactions", json=body, headers=AUTH).is_success
        [row] = service.served.evaluate()
        assert (row["model_version"], row["interactions"], row["hits"], row["warm_hits"],
                row["new_hits"], row["reserved_hits"]) == ("v1", 3, 2, 1, 1, 1)
        scrape = generate_latest(client.app.state.metrics.registry).decode()
        assert 'recsys_online_hit_rate{items="all",model_version="v1"} 0.666' in scrape
        assert 'recsys_served_lists_total{result="logged"} 3.0' in scrape
        [shown] = client.get("/ui/model").json()["online"]  # and on the page
        assert (shown["model_version"], shown["hits"], shown["interactions"]) == ("v1", 2, 3)


def test_sampling_logs_a_share_and_zero_logs_nothing(make_settings, factory):
    with TestClient(create_app(make_settings(served_sample=0.0, online_eval_s=0))) as client:
        for _ in range(5):
            client.get("/recommend/u1?k=3")
        assert client.app.state.service.served.flush() == 0
    with TestClient(create_app(make_settings(served_sample=0.5, online_eval_s=0))) as client:
        served = client.app.state.service.served
        users = list(factory.user_ids[:40])
        kept = [u for u in users if served.sampled(u)]
        assert 0 < len(kept) < len(users)  # a share, by user
        for user in users:
            for k in (3, 4):  # two lists each: a sampled user's are both logged
                client.get(f"/recommend/{user}?k={k}")
        assert served.flush() == 2 * len(kept)
        assert {s.user_id for s in iter_served(client.app.state.service.store)} == set(kept)


def test_the_writer_thread_writes_without_being_asked(make_settings):
    with TestClient(create_app(make_settings(served_sample=1.0, online_eval_s=0))) as client:
        client.get("/recommend/u2?k=3")
        store = client.app.state.service.store
        deadline = time.monotonic() + 10
        while not list(iter_served(store)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [s.user_id for s in iter_served(store)] == ["u2"]


def test_a_store_without_the_served_table_has_no_rates(tmp_path):
    """The nightly job may read a store that no service of this version created yet."""
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    store.interactions.create(store.engine)
    assert online_hit_rates(store, 0.0) == []
    store.close()
