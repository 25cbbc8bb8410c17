"""Redis: a cache of recommendation lists, never the only copy of anything.

Keys include everything an answer depends on (model version, catalog generation, the user's
generation, the request), so a new bundle, a new interaction or a delete can never serve a
stale list: they change the key. When Redis fails the service answers uncached: every error is
counted and Redis is left alone for ``backoff_s`` seconds instead of being hammered.

Asynchronous (redis.asyncio): a cache hit is served on the event loop without a thread hop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)


class Cache:
    def __init__(
        self,
        url: str | None,
        *,
        ttl_s: int = 300,
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
        self._redis = None
        if url:
            self._redis = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),  # fail fast; the backoff below paces retries
                health_check_interval=0,
            )

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def key(self, kind: str, *parts: Any) -> str:
        """A key for ``parts``; hashed so ids with ``:`` or long histories cannot collide."""
        digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).hexdigest()
        return f"{self.prefix}:{kind}:{digest}"

    async def get(self, key: str) -> Any | None:
        """The cached value, or None on a miss, with Redis down or disabled."""
        raw = await self.get_raw(key)
        return None if raw is None else json.loads(raw)

    async def set(self, key: str, value: Any) -> None:
        await self.set_raw(key, json.dumps(value).encode())

    async def get_raw(self, key: str) -> bytes | None:
        """The stored bytes, or None on a miss, with Redis down or disabled."""
        return await self._call(lambda r: r.get(key))

    async def set_raw(self, key: str, value: bytes) -> None:
        await self._call(lambda r: r.set(key, value, ex=self.ttl_s))

    def available(self) -> bool:
        """Whether the cache can be used right now (not disabled, not backing off)."""
        return self._redis is not None and time.monotonic() >= self._down_until

    async def state(self) -> str:
        """``disabled``, ``up`` or ``down`` (pings Redis unless backing off)."""
        if self._redis is None:
            return "disabled"
        return "up" if await self._call(lambda r: r.ping()) else "down"

    async def close(self) -> None:
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
