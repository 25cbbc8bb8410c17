"""Redis cache: real Redis, degrades when it stops, recovers when it returns."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from conftest import LOCAL_REDIS, redis_reachable

from service.cache import Cache


@pytest.fixture
def shared_cache():
    if not redis_reachable():
        pytest.skip("local Redis is not reachable")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    cache = Cache(LOCAL_REDIS, ttl_s=30, prefix=prefix)
    yield cache
    client = redis.Redis.from_url(LOCAL_REDIS)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    cache.close()


def test_round_trip_with_ttl(shared_cache: Cache):
    key = shared_cache.key("rec", "v1", 0, "u1", 0, 20, [], [])
    assert shared_cache.get(key) is None
    shared_cache.set(key, {"items": [["i1", 1.5]], "source": "stored"})
    assert shared_cache.get(key) == {"items": [["i1", 1.5]], "source": "stored"}
    assert 0 < redis.Redis.from_url(LOCAL_REDIS).ttl(key) <= 30
    assert shared_cache.state() == "up"


def test_keys_differ_for_every_part_and_cannot_collide(shared_cache: Cache):
    base = ("v1", 0, "u1", 0, 20, [], [])
    keys = {shared_cache.key("rec", *base)}
    for position, other in enumerate(["v2", 1, "u2", 1, 10, ["i1"], ["i2"]]):
        parts = list(base)
        parts[position] = other
        keys.add(shared_cache.key("rec", *parts))
    keys.add(shared_cache.key("rec", "v1", 0, "u1:0", 20, [], []))  # ids with ':' are safe
    assert len(keys) == 9


def test_disabled_cache_misses_quietly():
    cache = Cache(None)
    cache.set("k", 1)
    assert cache.get("k") is None and cache.state() == "disabled" and not cache.available()


def test_redis_down_counts_errors_backs_off_and_recovers(private_redis):
    errors = []
    cache = Cache(private_redis.url, backoff_s=0.5, on_error=lambda: errors.append(1))
    cache.set("k", "v")
    assert cache.get("k") == "v"

    private_redis("stop")
    started = time.monotonic()
    assert cache.get("k") is None
    assert errors and not cache.available()
    for _ in range(50):  # backing off: no further calls, no further errors, no waiting
        assert cache.get("k") is None
    assert len(errors) == 1 and time.monotonic() - started < 1.0

    private_redis("start")
    time.sleep(0.6)
    cache.set("k", "again")
    if cache.get("k") is None:  # a pooled socket may die once after the restart
        time.sleep(0.6)
        cache.set("k", "again")
    assert cache.get("k") == "again" and cache.state() == "up"
