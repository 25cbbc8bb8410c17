"""Per-stage latency (``recsys_stage_seconds{stage}``): the user, item and text towers (ONNX
Runtime), the FAISS search, Redis and the SQL store, timed where they run.

The code that runs a stage (a tower, the index, the cache) knows nothing of the app's metrics:
``RequestMiddleware`` puts the app's ``Metrics`` in a context variable for each request, and
the thread pool and the miss batches inherit it (asyncio tasks and ``run_in_threadpool`` copy
the context). Work outside a request (the bundle and change-feed polls) is not timed.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from functools import wraps
from typing import Any

STAGES = ("user_tower", "item_tower", "text_tower", "faiss", "redis", "store")

CURRENT: ContextVar[Any] = ContextVar("recsys_stage_metrics", default=None)


def observe(stage: str, started: float) -> None:
    """Record ``stage`` as having run from ``started`` (a ``time.perf_counter()``) until now."""
    metrics = CURRENT.get()
    if metrics is not None:
        metrics.observe_stage(stage, time.perf_counter() - started)


STORE_WRITES = ("upsert_items", "delete_item", "add_interaction")


def time_store_writes(store: Any) -> None:
    """Time the SQL store's writes (each one a commit) as ``store``, wrapping the methods of
    this one store object: the service's operations call them as they are."""
    for name in STORE_WRITES:
        method = getattr(store, name)

        @wraps(method)
        def timed_write(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                observe("store", started)

        setattr(store, name, timed_write)


class timed:  # noqa: N801 - used like a function: ``with timed("faiss"): ...``
    """Times its block as ``stage`` (a class, not ``contextmanager``: ~4x cheaper)."""

    __slots__ = ("stage", "started")

    def __init__(self, stage: str):
        self.stage = stage

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        observe(self.stage, self.started)
