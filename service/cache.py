"""The cache of recommendation lists (process memory, then Redis), never the only copy of anything.

Keys include everything an answer depends on (model version, catalog generation, the user's
generation, the request), so a new bundle, a new interaction or a delete can never serve a
stale list: they change the key. When Redis fails the service answers from memory or uncached:
every error is counted and Redis is left alone for ``backoff_s`` seconds instead of being
hammered.

Two layers. A small in-process LRU with the same TTL (``local_items`` entries, keyed by the
parts themselves: no hashing) answers hot keys without a network round trip: a Redis GET through
redis-py costs more CPU than the rest of a hit together (measured with py-spy). Because keys
carry every generation, a local entry is exactly as fresh as the Redis one; Redis stays the
layer shared by replicas and restarts. Both are used on the event loop only (redis.asyncio), so
the local layer needs no lock. Redis is read and written a batch at a time (one MGET, one
script call): the caller batches concurrent requests (``service.batching``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from cachetools import TTLCache
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.stages import timed

log = logging.getLogger(__name__)
MAX_WRITES_BEHIND = 64


# KEYS: the keys; ARGV[1]: TTL in seconds, ARGV[2..]: the values in the order of KEYS.
SET_MANY_WITH_TTL = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
"""


class Cache:
    def __init__(
        self,
        url: str | None,
        *,
        ttl_s: int = 300,
        local_items: int = 0,
        prefix: str = "recsys",
        timeout_s: float = 0.2,
        backoff_s: float = 3.0,
        on_error: Callable[[], None] = lambda: None,
    ):
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.backoff_s = backoff_s
        self._on_error = on_error
        self._down_until = 0.0
        self._local: TTLCache[tuple, bytes] | None = None
        if local_items > 0:
            self._local = TTLCache(local_items, ttl_s, timer=time.monotonic)
        self._redis = None
        self._writes: set[asyncio.Task[None]] = set()  # write-behind tasks still running
        if url:
            self._redis = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),  # fail fast; the backoff below paces retries
                health_check_interval=0,
            )
            # One command for a batch of writes: redis-py spends ~50 us of CPU a command, and
            # a pipeline of n SETs nearly n times that (measured: 4 SETs 120 us, this 56 us).
            self._set_many = self._redis.register_script(SET_MANY_WITH_TTL)

    def key(self, kind: str, *parts: Any) -> str:
        """A key for ``parts``; hashed so ids with ``:`` or long histories cannot collide."""
        digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).hexdigest()
        return f"{self.prefix}:{kind}:{digest}"

    def get_local(self, parts: tuple) -> bytes | None:
        """What ``set_local`` stored under ``parts`` (a hashable key), if still there."""
        return self._local.get(parts) if self._local is not None else None

    def set_local(self, parts: tuple, value: bytes) -> None:
        if self._local is not None:
            self._local[parts] = value

    async def get_many(self, keys: list[str]) -> list[bytes | None] | None:
        """The values in Redis (None where a key is not cached), in one MGET; None when Redis
        is down or disabled."""
        if not self.available():
            return None
        with timed("redis"):
            return await self._call(lambda r: r.mget(keys))

    async def set_many(self, pairs: list[tuple[str, bytes]]) -> None:
        """Store in Redis with the TTL, in one command, unless Redis is down or disabled."""
        if not pairs or not self.available():
            return
        keys, values = [key for key, _ in pairs], [value for _, value in pairs]
        with timed("redis"):
            await self._call(lambda r: self._set_many(keys=keys, args=[self.ttl_s, *values]))

    async def store(self, pairs: list[tuple[str, bytes]]) -> None:
        """:meth:`set_many` without making the caller wait for Redis: a list is answered as
        soon as it is ranked (a key carries every generation, so a write that lands late can
        never be stale). Past ``MAX_WRITES_BEHIND`` writes in flight the caller waits, so a
        slow Redis slows the misses instead of piling up tasks."""
        if not pairs or not self.available():
            return
        if len(self._writes) >= MAX_WRITES_BEHIND:
            await self.set_many(pairs)
            return
        task = asyncio.create_task(self.set_many(pairs))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def available(self) -> bool:
        """Whether the cache can be used right now (not disabled, not backing off)."""
        return self._redis is not None and time.monotonic() >= self._down_until

    async def state(self) -> str:
        """``disabled``, ``up`` or ``down`` (pings Redis unless backing off)."""
        if self._redis is None:
            return "disabled"
        return "up" if await self._call(lambda r: r.ping()) else "down"

    async def close(self) -> None:
        if self._writes:  # the writes behind: finish them before the connection goes
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def _call(self, operation: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
        if not self.available():
            return None
        try:
            return await operation(self._redis)
        except (redis.RedisError, OSError) as error:
            self._down_until = time.monotonic() + self.backoff_s
            self._on_error()
            log.warning("redis unavailable, serving uncached for %.1fs: %s", self.backoff_s, error)
            return None
