"""The Python client (``client/``) against the live app: in process through FastAPI's
TestClient (an ``httpx.Client``), and the async client against a real ``python -m service``."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient

from client import AsyncRecsysClient, Recommendation, RecsysClient, RecsysError
from tests.service.conftest import API_KEY
from tests.service.helpers import brute_force, item_body


@pytest.fixture
def recsys(client: TestClient) -> RecsysClient:
    return RecsysClient(http=client, api_key=API_KEY)


def test_the_sync_client_covers_the_api(recsys: RecsysClient, factory):
    listed = recsys.recommend("u3", k=5)
    assert isinstance(listed, Recommendation) and listed.source == "stored"
    assert [i.item_id for i in listed.items] == brute_force(
        factory, factory.user_embeddings[3], 5, exclude=factory.trained_items(3))
    assert not any(i.reserved or i.new for i in listed.items)
    top = [i.item_id for i in listed.items]
    assert [i.item_id for i in recsys.recommend("u3", k=3, offset=2).items] == top[2:5]
    assert top[0] not in [i.item_id for i in recsys.recommend("u3", k=5, exclude=top[:1]).items]
    posted = recsys.recommend("u3", k=5, history=["i7"])
    assert posted.source == "tower" and len(posted.items) == 5

    written = recsys.upsert_items([item_body(factory, "client-1", factory.features[9])])
    assert written.upserted == 1 and written.model_version == factory.version
    assert recsys.item("client-1").source == "online"
    page = recsys.items(q="client-")
    assert page.total == 1 and page.items[0].new and page.items[0].source == "online"
    assert recsys.add_interaction("u3", "client-1", ts=5.0).item_id == "client-1"
    history = recsys.history("u3", limit=2)
    assert history.items[0].item_id == "client-1" and history.items[0].ts == 5.0
    assert recsys.delete_item("client-1") is None
    assert recsys.ready().ready


def test_errors_carry_the_status_and_the_body(client: TestClient, recsys: RecsysClient):
    with pytest.raises(RecsysError) as missing:
        recsys.history("nobody")
    assert missing.value.status == 404 and "nobody" in str(missing.value.detail)
    assert missing.value.request_id  # the id the service answered with
    with pytest.raises(RecsysError) as invalid:
        recsys.recommend("u1", k=0)
    assert invalid.value.status == 422 and isinstance(invalid.value.detail, list)
    anonymous = RecsysClient(http=client)  # no API key
    with pytest.raises(RecsysError) as refused:
        anonymous.delete_item("i1")
    assert refused.value.status == 401
    assert recsys.item("i1").source == "bundle"  # nothing was deleted


def test_ids_are_escaped_and_headers_are_sent(factory):
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"user_id": "a?b#c", "items": [], "model_version": "v",
                                         "cached": False, "source": "stored"})

    with RecsysClient("http://service", api_key="k", request_id="req-1",
                      transport=httpx.MockTransport(answer)) as recsys:
        recsys.recommend("a?b#c", k=3, exclude=["x", "y"], offset=4)
        recsys.recommend("a?b#c", request_id="req-2")
    first, second = seen
    assert first.url.raw_path == b"/recommend/a%3Fb%23c?k=3&exclude=x&exclude=y&offset=4"
    assert first.headers["X-API-Key"] == "k" and first.headers["X-Request-ID"] == "req-1"
    assert second.headers["X-Request-ID"] == "req-2"


@pytest.mark.slow
def test_the_async_client_against_a_real_server(live_server, factory):
    server = live_server()

    async def scenario() -> None:
        async with AsyncRecsysClient(server.url, api_key=API_KEY, request_id="rid-7") as recsys:
            lists = await asyncio.gather(*(recsys.recommend(f"u{n}", k=4) for n in range(5)))
            assert [len(r.items) for r in lists] == [4] * 5
            assert (await recsys.items(limit=2)).total == len(factory.item_ids)
            with pytest.raises(RecsysError) as error:
                await recsys.item("no-such-item")
            assert error.value.status == 404
            assert error.value.request_id == "rid-7"  # the service echoes it

    asyncio.run(scenario())
