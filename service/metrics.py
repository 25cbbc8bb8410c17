"""Prometheus metrics, one registry per app so several apps can live in one process (tests)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "recsys_request_seconds", "Request latency by route template.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.responses = Counter(
            "recsys_responses_total", "Responses by route and status code.",
            ["method", "route", "status"], registry=r,
        )
        self.cache = Counter(
            "recsys_cache_requests_total",
            "Recommendation cache lookups: hit, miss, or bypass (Redis down or disabled).",
            ["result"], registry=r,
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
        self._latency: dict[tuple[str, str], Any] = {}
        self._responses: dict[tuple[str, str, str], Any] = {}
        self._cache: dict[str, Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        latency = self._latency.get((method, route))
        if latency is None:
            latency = self._latency[(method, route)] = self.latency.labels(method, route)
        latency.observe(seconds)
        key = (method, route, str(status))
        responses = self._responses.get(key)
        if responses is None:
            responses = self._responses[key] = self.responses.labels(*key)
        responses.inc()

    def cache_result(self, result: str) -> None:
        """``hit``, ``miss`` or ``bypass``."""
        child = self._cache.get(result)
        if child is None:
            child = self._cache[result] = self.cache.labels(result=result)
        child.inc()

    def set_model(self, version: str, model: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, model=model).set(1)
