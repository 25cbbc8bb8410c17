"""Redis cache: real Redis, degrades when it stops, recovers when it returns."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from service.cache import Cache
from tests.service.conftest import LOCAL_REDIS, redis_client, redis_reachable


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
        assert await cache.get_many([key]) == [None]
        await cache.set_many([(key, b'stored\n[{"item_id":"i1","score":1.5}]')])
        assert await cache.get_many([key]) == [b'stored\n[{"item_id":"i1","score":1.5}]']
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
        await cache.set_many([("k", b"1")])
        assert await cache.get_many(["k"]) is None and await cache.state() == "disabled"
        assert not cache.available()

    asyncio.run(scenario())


def test_redis_down_counts_errors_backs_off_and_recovers(private_redis):
    errors = []

    async def scenario():
        cache = Cache(private_redis.url, backoff_s=0.5, on_error=lambda: errors.append(1))
        await cache.set_many([("k", b"v")])
        assert await cache.get_many(["k"]) == [b"v"]

        private_redis("stop")
        started = time.monotonic()
        assert await cache.get_many(["k"]) is None
        assert errors and not cache.available()
        for _ in range(50):  # backing off: no further calls, no further errors, no waiting
            assert await cache.get_many(["k"]) is None
        assert len(errors) == 1 and time.monotonic() - started < 1.0

        private_redis("start")
        await asyncio.sleep(0.6)
        await cache.set_many([("k", b"again")])  # the script is gone with the old server
        if await cache.get_many(["k"]) != [b"again"]:  # a pooled socket may die once
            await asyncio.sleep(0.6)
            await cache.set_many([("k", b"again")])
        assert await cache.get_many(["k"]) == [b"again"] and await cache.state() == "up"
        await cache.close()

    asyncio.run(scenario())


def test_batches_round_trip_every_value_with_the_ttl(prefix):
    async def scenario():
        cache = Cache(LOCAL_REDIS, ttl_s=30, prefix=prefix)
        keys = [cache.key("rec", n) for n in range(50)]
        await cache.set_many([(k, b"v%d" % n) for n, k in enumerate(keys)])
        found = await cache.get_many([*keys, cache.key("rec", "none")])
        assert found == [b"v%d" % n for n in range(50)] + [None]
        big = bytes(range(256)) * 4096  # 1 MiB with CR, LF and every other byte: many reads
        await cache.set_many([(keys[0], big), (keys[1], b"")])
        assert await cache.get_many(keys[:2]) == [big, b""]
        await cache.close()
        return keys

    keys = asyncio.run(scenario())
    assert all(0 < redis_client().ttl(key) <= 30 for key in keys)


def test_writes_behind_return_at_once_and_land_before_close(prefix, monkeypatch):
    async def scenario():
        cache = Cache(LOCAL_REDIS, ttl_s=30, prefix=prefix)
        keys = [cache.key("rec", n) for n in range(3)]
        await cache.store([(keys[0], b"behind")])
        assert len(cache._writes) == 1  # not written yet: the caller did not wait
        monkeypatch.setattr("service.cache.MAX_WRITES_BEHIND", 1)
        await cache.store([(keys[1], b"inline")])  # past the cap: written before returning
        assert redis_client().get(keys[1]) == b"inline"
        await cache.close()  # waits for what is still behind
        assert redis_client().get(keys[0]) == b"behind"

    asyncio.run(scenario())


def test_error_reply_is_counted_and_backs_off(private_redis):
    errors = []
    # No memory for anything: every write gets an OOM error reply (the connection stays up).
    redis_client(private_redis.url).config_set("maxmemory", 1)
    redis_client(private_redis.url).config_set("maxmemory-policy", "noeviction")

    async def scenario():
        cache = Cache(private_redis.url, backoff_s=30, on_error=lambda: errors.append(1))
        await cache.set_many([("k", b"v")])
        assert errors == [1] and not cache.available()
        assert await cache.get_many(["k"]) is None  # backing off: Redis is not asked
        assert errors == [1]
        await cache.close()

    asyncio.run(scenario())


def test_unreachable_redis_fails_fast():
    errors = []

    async def scenario():
        cache = Cache("redis://127.0.0.1:1/0", timeout_s=0.1, backoff_s=0.2,
                      on_error=lambda: errors.append(1))
        started = time.monotonic()
        assert await cache.get_many(["k"]) is None
        assert time.monotonic() - started < 1.0 and errors == [1]

    asyncio.run(scenario())


def test_local_layer_keeps_bytes_by_parts_until_they_expire():
    cache = Cache(None, ttl_s=1, local_items=2)
    cache.set_local(("v1", 0, "u1"), b"body")
    assert cache.get_local(("v1", 0, "u1")) == b"body"
    assert cache.get_local(("v1", 1, "u1")) is None  # another generation: another entry
    cache.set_local(("a",), b"a")
    cache.set_local(("b",), b"b")  # two entries at most: the oldest goes
    assert cache.get_local(("v1", 0, "u1")) is None
    time.sleep(1.1)
    assert cache.get_local(("b",)) is None
    assert Cache(None).get_local(("b",)) is None  # local_items=0: no local layer


@pytest.mark.parametrize("user_id", ["u1", None, "ü😀\"\\"])
def test_response_body_is_what_pydantic_writes(user_id):
    from service import schemas
    from service.responses import items_json, recommendation_json

    hits = [("i1", 1.5), ("é\"x", -1e-7), ("b", 1e20), ("c", 31.256893157958984)]
    for cached in (True, False):
        expected = schemas.RecommendationOut(
            user_id=user_id, model_version="v1", cached=cached, source="stored",
            items=[schemas.ScoredItem(item_id=i, score=s) for i, s in hits],
        ).model_dump_json().encode()
        assert recommendation_json(user_id, "v1", cached, b"stored", items_json(hits)) == expected
