"""Redis cache: real Redis, degrades when it stops, recovers when it returns."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from conftest import LOCAL_REDIS, redis_client, redis_reachable

from service.cache import Cache


@pytest.fixture
def prefix():
    if not redis_reachable():
        pytest.skip("local Redis is not reachable")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis_client()
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_round_trip_with_ttl(prefix):
    async def scenario():
        cache = Cache(LOCAL_REDIS, ttl_s=30, prefix=prefix)
        key = cache.key("rec", "v1", 0, "u1", 0, 20, [], [])
        assert await cache.get(key) is None
        await cache.set(key, {"items": [["i1", 1.5]], "source": "stored"})
        assert await cache.get(key) == {"items": [["i1", 1.5]], "source": "stored"}
        assert await cache.state() == "up"
        await cache.close()
        return key

    key = asyncio.run(scenario())
    assert 0 < redis_client().ttl(key) <= 30


def test_keys_differ_for_every_part_and_cannot_collide():
    cache = Cache(None, prefix="p")
    base = ("v1", 0, "u1", 0, 20, [], [])
    keys = {cache.key("rec", *base)}
    for position, other in enumerate(["v2", 1, "u2", 1, 10, ["i1"], ["i2"]]):
        parts = list(base)
        parts[position] = other
        keys.add(cache.key("rec", *parts))
    keys.add(cache.key("rec", "v1", 0, "u1:0", 20, [], []))  # ids with ':' are safe
    assert len(keys) == 9


def test_disabled_cache_misses_quietly():
    async def scenario():
        cache = Cache(None)
        await cache.set("k", 1)
        assert await cache.get("k") is None and await cache.state() == "disabled"
        assert not cache.available()

    asyncio.run(scenario())


def test_redis_down_counts_errors_backs_off_and_recovers(private_redis):
    errors = []

    async def scenario():
        cache = Cache(private_redis.url, backoff_s=0.5, on_error=lambda: errors.append(1))
        await cache.set("k", "v")
        assert await cache.get("k") == "v"

        private_redis("stop")
        started = time.monotonic()
        assert await cache.get("k") is None
        assert errors and not cache.available()
        for _ in range(50):  # backing off: no further calls, no further errors, no waiting
            assert await cache.get("k") is None
        assert len(errors) == 1 and time.monotonic() - started < 1.0

        private_redis("start")
        await asyncio.sleep(0.6)
        await cache.set("k", "again")
        if await cache.get("k") is None:  # a pooled socket may die once after the restart
            await asyncio.sleep(0.6)
            await cache.set("k", "again")
        assert await cache.get("k") == "again" and await cache.state() == "up"
        await cache.close()

    asyncio.run(scenario())


def test_concurrent_commands_share_one_pipelined_connection(prefix):
    async def scenario():
        cache = Cache(LOCAL_REDIS, ttl_s=30, prefix=prefix)
        keys = [cache.key("rec", n) for n in range(50)]
        await asyncio.gather(*(cache.set_raw(k, b"v%d" % n) for n, k in enumerate(keys)))
        values = await asyncio.gather(*(cache.get_raw(k) for k in keys))
        assert values == [b"v%d" % n for n in range(50)]
        big = bytes(range(256)) * 4096  # 1 MiB with CR, LF and every other byte: many reads
        await cache.set_raw(keys[0], big)
        assert await cache.get_raw(keys[0]) == big
        await cache.close()

    asyncio.run(scenario())


def test_error_reply_is_counted_and_backs_off(prefix):
    errors = []

    async def scenario():
        cache = Cache(LOCAL_REDIS, prefix=prefix, backoff_s=30, on_error=lambda: errors.append(1))
        key = cache.key("rec", "list")
        redis_client().rpush(key, "x")  # GET on a list: WRONGTYPE error reply
        assert await cache.get_raw(key) is None
        assert errors == [1] and not cache.available()
        await cache.close()

    asyncio.run(scenario())


def test_unreachable_redis_fails_fast():
    errors = []

    async def scenario():
        cache = Cache("redis://127.0.0.1:1/0", timeout_s=0.1, backoff_s=0.2,
                      on_error=lambda: errors.append(1))
        started = time.monotonic()
        assert await cache.get_raw("k") is None
        assert time.monotonic() - started < 1.0 and errors == [1]

    asyncio.run(scenario())


@pytest.mark.parametrize("user_id", ["u1", None, "ü😀\"\\"])
def test_response_body_is_what_pydantic_writes(user_id):
    from service import schemas
    from service.recommender import items_json, recommendation_json

    hits = [("i1", 1.5), ("é\"x", -1e-7), ("b", 1e20), ("c", 31.256893157958984)]
    for cached in (True, False):
        expected = schemas.RecommendationOut(
            user_id=user_id, model_version="v1", cached=cached, source="stored",
            items=[schemas.ScoredItem(item_id=i, score=s) for i, s in hits],
        ).model_dump_json().encode()
        assert recommendation_json(user_id, "v1", cached, b"stored", items_json(hits)) == expected
