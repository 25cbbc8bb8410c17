"""Prometheus metrics, one registry per app so several apps can live in one process (tests)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Cache.get's outcome -> (result, layer) labels of recsys_cache_requests_total.
CACHE_LABELS = {"memory": ("hit", "memory"), "redis": ("hit", "redis"), "miss": ("miss", "redis"),
                "bypass": ("bypass", "none")}
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # One histogram also counts responses (its _count by status): a second metric would
        # cost every request another locked increment.
        self.latency = Histogram(
            "recsys_request_seconds", "Request latency by route template and status code.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.cache = Counter(
            "recsys_cache_requests_total",
            "Recommendation cache lookups: result hit (layer memory or redis), miss, or bypass "
            "(Redis down or disabled, and not in memory).",
            ["result", "layer"], registry=r,
        )
        self.miss_batch = Histogram(
            "recsys_miss_batch_size", "Requests past the memory cache answered together: one "
            "Redis MGET, one FAISS search for what Redis lacks, one Redis write.",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.redis_errors = Counter("recsys_redis_errors_total", "Failed Redis calls.", registry=r)
        self.index_items = Gauge("recsys_index_items", "Live items in the index.", registry=r)
        self.items_ingested = Counter(
            "recsys_items_ingested_total", "Items accepted by POST /items.", registry=r
        )
        self.items_deleted = Counter(
            "recsys_items_deleted_total", "Items deleted by DELETE /items.", registry=r
        )
        self.interactions = Counter(
            "recsys_interactions_total", "Interactions accepted.", registry=r
        )
        self.model_info = Gauge(
            "recsys_model_info", "The bundle being served (value 1).", ["version", "model"],
            registry=r,
        )
        self.reloads = Counter(
            "recsys_reloads_total", "Bundle loads by result.", ["result"], registry=r
        )

        # Labelled children, looked up once: ``labels()`` takes a lock and validates the
        # labels on every call. Filled on first use, so /metrics shows the same series.
        self._latency: dict[tuple[str, str, int], Any] = {}
        self._cache: dict[str, Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        latency = self._latency.get(key)
        if latency is None:
            latency = self._latency[key] = self.latency.labels(method, route, str(status))
        latency.observe(seconds)

    def cache_result(self, outcome: str) -> None:
        """``memory`` or ``redis`` (a hit in that layer), ``miss`` or ``bypass``."""
        child = self._cache.get(outcome)
        if child is None:
            result, layer = CACHE_LABELS[outcome]
            child = self._cache[outcome] = self.cache.labels(result=result, layer=layer)
        child.inc()

    def set_model(self, version: str, model: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, model=model).set(1)
