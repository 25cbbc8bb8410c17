"""The list API of issue 23: reserved/new flags, exclude and offset on GET and POST (and the
cache keeping them apart), GET /items and GET /users/{id}/history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bundle.serving_rules import reserved_slots
from bundle.testing import FactoryBundle, make_bundle
from eventlog.store import StoredItem
from service.app import create_app
from tests.service.conftest import AUTH
from tests.service.helpers import ids, item_body

SHARE = 0.2


@pytest.fixture(scope="module")
def slotted(tmp_path_factory: pytest.TempPathFactory) -> tuple[FactoryBundle, list[str]]:
    """A bundle whose new items are the 20 that u0 likes least: none reaches u0's list on its
    own, so every new item in it fills a reserved slot (positions 5, 10, 15, 20 for 0.2)."""
    folder = tmp_path_factory.mktemp("slotted")
    plain = make_bundle(folder / "plain")
    scores = plain.item_embeddings @ plain.user_embeddings[0]
    new = [plain.item_ids[i] for i in np.argsort(scores)[:20]]
    return make_bundle(folder / "v1", new_items=new, new_item_slots=SHARE), new


@pytest.fixture
def slot_client(make_settings, slotted) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(bundle=slotted[0].path))) as test_client:
        yield test_client


def test_reserved_items_are_marked_and_the_others_stay_in_score_order(slot_client, slotted):
    _, new = slotted
    items = slot_client.get("/recommend/u0?k=20").json()["items"]
    assert [i for i, item in enumerate(items) if item["reserved"]] == [4, 9, 14, 19]
    assert all(item["new"] == (item["item_id"] in new) for item in items)
    assert all(item["new"] for item in items if item["reserved"])
    kept = [item["score"] for item in items if not item["reserved"]]
    assert kept == sorted(kept, reverse=True)
    # the policy is visible: a reserved item scores below the item after it
    assert items[4]["score"] < items[5]["score"]
    for length in range(1, 21):  # the bundle's rule holds in every prefix
        assert sum(item["new"] for item in items[:length]) >= reserved_slots(SHARE, length)


def test_an_online_item_is_new_and_a_popular_list_marks_it(make_settings, slotted):
    factory, new = slotted
    settings = make_settings(bundle=factory.path, unknown_user="popular")
    with TestClient(create_app(settings)) as client:
        body = {"items": [item_body(factory, "fresh", factory.features[3])]}
        assert client.post("/items", json=body, headers=AUTH).status_code == 200
        items = client.get("/recommend/u3?k=50").json()["items"]
        assert all(item["new"] == (item["item_id"] in {*new, "fresh"}) for item in items)
        page = client.get("/items?q=fresh").json()
        assert page["items"] == [{"item_id": "fresh", "title": None, "source": "online",
                                  "new": True}]
        popular = client.get("/recommend/nobody?k=5").json()
        assert popular["source"] == "popular"
        assert not any(item["reserved"] for item in popular["items"])


def test_offset_pages_the_same_ranking_flags_included(slot_client):
    whole = slot_client.get("/recommend/u0?k=20").json()["items"]
    page = slot_client.get("/recommend/u0?k=10&offset=10").json()["items"]
    assert page == whole[10:20]
    posted = slot_client.post("/recommend", json={"user_id": "u0", "history": ["i1"], "k": 20})
    tail = slot_client.post("/recommend", json={"user_id": "u0", "history": ["i1"], "k": 5,
                                                "offset": 15})
    assert tail.json()["items"] == posted.json()["items"][15:]


def test_exclude_on_get_matches_post_and_the_cache_keeps_lists_apart(client: TestClient):
    slot_client = client  # no reserved slots: an exclusion shifts the rest up exactly
    first = ids(slot_client.get("/recommend/u1?k=10").json())
    again = slot_client.get("/recommend/u1?k=10").json()
    assert again["cached"] and ids(again) == first
    drop = first[:2]
    got = slot_client.get("/recommend/u1", params=[("k", 10), *(("exclude", i) for i in drop)])
    assert got.status_code == 200
    kept = ids(got.json())
    assert not set(drop) & set(kept) and kept[:8] == first[2:]
    assert not got.json()["cached"]  # another key than the list without exclusions
    posted = slot_client.post("/recommend", json={"user_id": "u1", "k": 10, "exclude": drop})
    assert ids(posted.json()) == kept
    paged = slot_client.get("/recommend/u1?k=10&offset=3").json()
    assert not paged["cached"] and ids(paged)[:7] == first[3:]
    # and each cached list still answers for its own request
    assert ids(slot_client.get("/recommend/u1?k=10").json()) == first
    assert ids(slot_client.get("/recommend/u1", params=[("k", 10), *(("exclude", i)
                                                                     for i in drop)]).json()) \
        == kept


@pytest.mark.parametrize("query", ["offset=-1", "offset=1001", "exclude=a%20b", "exclude="])
def test_bad_offset_or_exclude_is_refused(slot_client, query):
    assert slot_client.get(f"/recommend/u0?{query}").status_code == 422


def test_items_are_paged_and_searched_by_id_and_title(client: TestClient, factory):
    page = client.get("/items?offset=0&limit=3").json()
    assert page == {"items": [{"item_id": f"i{n}", "title": None, "source": "bundle",
                               "new": False} for n in range(3)],
                    "total": 200, "offset": 0, "limit": 3}
    assert client.delete("/items/i1", headers=AUTH).status_code == 204
    body = {"items": [item_body(factory, "zz-online", factory.features[0])]}
    assert client.post("/items", json=body, headers=AUTH).status_code == 200
    everything = client.get("/items?limit=1000").json()
    listed = [item["item_id"] for item in everything["items"]]
    assert everything["total"] == len(listed) == 200
    assert "i1" not in listed and listed[-1] == "zz-online"
    assert client.get("/items?offset=198&limit=5").json()["items"][-1]["source"] == "online"
    found = client.get("/items?q=i19&limit=100").json()
    assert {item["item_id"] for item in found["items"]} == {"i19", *(f"i19{n}" for n in
                                                                    range(10))}
    assert found["total"] == 11
    # a title (the text of an item posted as text) is searched case-insensitively
    store = client.app.state.service.store
    with store.engine.begin() as conn:
        conn.execute(store.texts.insert(), [{"item_id": "i7", "text": "Red Shoes #fashion"}])
    titled = client.get("/items?q=shoes").json()
    assert titled["items"] == [{"item_id": "i7", "title": "Red Shoes #fashion",
                                "source": "bundle", "new": False}]
    assert client.get("/items?limit=0").status_code == 422
    assert client.get(f"/items?offset={2**63 - 1}").status_code == 422
    assert client.get("/items?offset=100000").json()["items"] == []  # past the end: empty


def test_history_is_logged_events_newest_first_then_the_bundle(client: TestClient, factory):
    trained = factory.trained_items(2)
    assert client.get("/users/nobody/history").status_code == 404
    for n, item in enumerate(["i150", "i151"]):
        body = {"user_id": "u2", "item_id": item, "ts": 1000.0 + n}
        assert client.post("/interactions", json=body, headers=AUTH).is_success
    history = client.get("/users/u2/history?limit=50").json()
    assert history["user_id"] == "u2"
    assert history["items"][:2] == [{"item_id": "i151", "title": None, "ts": 1001.0},
                                    {"item_id": "i150", "title": None, "ts": 1000.0}]
    assert [i["item_id"] for i in history["items"][2:]] == list(reversed(trained))
    assert all(i["ts"] is None for i in history["items"][2:])
    assert len(client.get("/users/u2/history?limit=3").json()["items"]) == 3
    # an online-only user has a history too
    client.post("/interactions", json={"user_id": "newbie", "item_id": "i3"}, headers=AUTH)
    assert [i["item_id"] for i in client.get("/users/newbie/history").json()["items"]] == ["i3"]


def test_the_store_keeps_the_text_of_items_posted_as_text(tmp_path: Path):
    from eventlog.store import Store

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.create()
    row = np.ones(4, np.float32)
    store.upsert_items([StoredItem("a", row, "x:4", row, row, "v1", text="A title"),
                        StoredItem("b", row, "x:4", row, row, "v1")])
    assert store.item_texts() == {"a": "A title"}
    store.upsert_items([StoredItem("a", row, "x:4", row, row, "v1")])  # now features only
    assert store.item_texts(["a", "b"]) == {}
    store.upsert_items([StoredItem("b", row, "x:4", row, row, "v1", text="B")])
    store.delete_item("b")
    assert store.item_texts() == {}
    store.close()
