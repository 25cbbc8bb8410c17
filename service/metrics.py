"""Prometheus metrics, one registry per app so several apps can live in one process (tests).

No ``*_created`` series: they double every counter and histogram for a start time that
Prometheus does not need (``disable_created_metrics`` is process-wide, set on import)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from service import logs
from service.stages import STAGES

disable_created_metrics()

# Cache.get's outcome -> (result, layer) labels of recsys_cache_requests_total.
CACHE_LABELS = {"memory": ("hit", "memory"), "redis": ("hit", "redis"), "miss": ("miss", "redis"),
                "bypass": ("bypass", "none")}
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)
STAGE_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                 0.5, 2.5)


class LoggedCounter:
    """A counter of writes whose every increment is also a log line (``event``, ``count``,
    the served model version): one line per item upsert batch, delete or interaction batch,
    ids counted, never listed."""

    def __init__(self, counter: Counter, event: str, metrics: Metrics):
        self.counter, self.event, self.metrics = counter, event, metrics

    def inc(self, amount: int = 1) -> None:
        self.counter.inc(amount)
        logs.events.info(self.event, count=amount, model_version=self.metrics.version)


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
        self.items_ingested = LoggedCounter(Counter(
            "recsys_items_ingested_total", "Items accepted by POST /items.", registry=r
        ), "items_upserted", self)
        self.items_deleted = LoggedCounter(Counter(
            "recsys_items_deleted_total", "Items deleted by DELETE /items.", registry=r
        ), "items_deleted", self)
        self.interactions = LoggedCounter(Counter(
            "recsys_interactions_total", "Interactions accepted.", registry=r
        ), "interactions_logged", self)
        self.model_info = Gauge(
            "recsys_model_info", "The bundle being served (value 1).", ["version", "model"],
            registry=r,
        )
        self.reloads = Counter(
            "recsys_reloads_total", "Bundle loads by result.", ["result"], registry=r
        )
        self.ready = Gauge(
            "recsys_ready", "1 when the last GET /readyz answered 200, 0 when it answered 503 "
            "(as often as the orchestrator probes it).", registry=r,
        )
        self.stages = Histogram(
            "recsys_stage_seconds", "Time in each stage of a request: the user, item and text "
            "towers (ONNX Runtime), the FAISS search (one per miss batch), Redis (one MGET or "
            "write per miss batch) and the SQL store (writes).",
            ["stage"], buckets=STAGE_BUCKETS, registry=r,
        )
        self._stages = {stage: self.stages.labels(stage) for stage in STAGES}
        self.version: str | None = None  # the served model version, for the log lines

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

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._stages[stage].observe(seconds)

    def set_model(self, version: str, model: str) -> None:
        self.version = version
        self.model_info.clear()
        self.model_info.labels(version=version, model=model).set(1)
