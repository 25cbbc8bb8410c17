"""The served-list log and the online hit-rate gauge (the online evaluation, eventlog/served.py).

A request only appends ``(user, version, time, response body)`` to a bounded in-memory queue
(a sampled share, ``RECSYS_SERVED_SAMPLE``): no parsing, no I/O. The same body served to the
same user again within ``REPEAT_S`` (a cache hit, mostly: the very same bytes object) is not
logged again: it tells the evaluation nothing new, and hot users would otherwise cost a row
each request. A writer thread parses the
bodies and writes them in batches every ``FLUSH_S``; an evaluation thread recomputes
``recsys_online_hit_rate`` every ``RECSYS_ONLINE_EVAL_S`` and prunes old lists. When the store is
slow the queue fills and the oldest lists are dropped (counted), never a request delayed.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import zlib

import pydantic_core
from prometheus_client import Counter, Gauge

from eventlog.served import ServedList, add_served, online_hit_rates, prune_served
from eventlog.store import Store
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)
FLUSH_S = 1.0
MAX_PENDING = 100_000  # lists waiting for the writer; beyond it the oldest are dropped
BATCH = 5_000  # lists a write holds at most
PRUNE_S = 3_600.0
REPEAT_S = 600.0  # an identical list served again to a user within it is logged once
LAST_KEPT = 100_000  # users whose last logged list is remembered (then forgotten at once)


class ServedLog:
    def __init__(self, store: Store, settings: Settings, metrics: Metrics):
        self.latest: list[dict] = []  # the last evaluation's rows, per model version
        self.store = store
        self.sample = settings.served_sample
        self.window_s = settings.online_window_s
        self.eval_s = settings.online_eval_s
        self.keep_s = settings.served_keep_days * 86_400
        self._pending: collections.deque = collections.deque()
        self._last: dict[str, tuple[bytes, float]] = {}  # user -> last logged body, when
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._write_lock = threading.Lock()
        # one pair a registry: an app's lifespan may run more than once (tests)
        if not hasattr(metrics, "online_eval"):
            r = metrics.registry
            metrics.online_eval = (  # type: ignore[attr-defined]
                Counter("recsys_served_lists_total", "Served lists of the online evaluation by "
                        "result: logged (written to the store), dropped (queue full), failed "
                        "(write error).", ["result"], registry=r),
                Gauge("recsys_online_hit_rate", "Share of the interactions of the last "
                      "RECSYS_ONLINE_WINDOW_S that hit a list served to their user within that "
                      "window before them, by model version and items (all, warm, new).",
                      ["model_version", "items"], registry=r))
        self.lists, self.hit_rate = metrics.online_eval  # type: ignore[attr-defined]

    # ---- the request side: one append ---------------------------------------------------

    def note(self, user_id: str | None, version: str, body: bytes) -> bytes:
        """Queue a served response body (a ``RecommendationOut``) for the log, sampled;
        returns the body."""
        if user_id is None or (self.sample < 1.0 and not self.sampled(user_id)):
            return body
        now = time.time()
        last = self._last.get(user_id)
        if last is not None and now - last[1] < REPEAT_S and (
                last[0] is body or last[0] == body):
            return body
        if len(self._last) >= LAST_KEPT:
            self._last = {}
        self._last[user_id] = (body, now)
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            pending.popleft()
            self.lists.labels(result="dropped").inc()
        pending.append((user_id, version, now, body))
        return body

    def sampled(self, user_id: str) -> bool:
        """Whether ``user_id`` is in the sample: by user, not by list, so a sampled user's
        lists are all logged and a hit is never lost to an unlogged list of its user."""
        return zlib.crc32(user_id.encode()) % 10_000 < self.sample * 10_000

    # ---- the threads ---------------------------------------------------------------------

    def start(self) -> None:
        if self.sample > 0:
            self._spawn(self._write_loop, "served-writer")
        if self.eval_s > 0:
            self._spawn(self._evaluate_loop, "online-eval")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads, then write what is still queued."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.flush()

    def _write_loop(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def _evaluate_loop(self) -> None:
        pruned = 0.0
        while True:
            try:
                self.evaluate()
                if time.time() - pruned > PRUNE_S:
                    prune_served(self.store, time.time() - self.keep_s)
                    pruned = time.time()
            except Exception:  # the next round tries again
                log.exception("online evaluation failed")
            if self._stop.wait(self.eval_s):
                return

    def flush(self) -> int:
        """Write every queued list (in batches of ``BATCH``); returns how many were written."""
        written = 0
        with self._write_lock:
            while self._pending:
                batch = []
                while self._pending and len(batch) < BATCH:
                    batch.append(self._pending.popleft())
                lists = [parse(*entry) for entry in batch]
                try:
                    add_served(self.store, lists)
                except Exception:  # a store outage costs these lists, never a request
                    log.exception("could not log %d served lists", len(lists))
                    self.lists.labels(result="failed").inc(len(lists))
                    continue
                self.lists.labels(result="logged").inc(len(lists))
                written += len(lists)
        return written

    def evaluate(self) -> list[dict]:
        """Recompute the gauge over the interactions of the last window; returns its rows."""
        now = time.time()
        rows = online_hit_rates(self.store, now - self.window_s, now, window_s=self.window_s,
                                by_day=False)
        self.latest = rows  # what the page at /ui shows
        self.hit_rate.clear()
        for row in rows:
            if row["interactions"]:
                for items, name in (("all", "hit_rate"), ("warm", "warm_hit_rate"),
                                    ("new", "new_hit_rate")):
                    self.hit_rate.labels(row["model_version"], items).set(row[name])
        return rows


def parse(user_id: str, version: str, served_at: float, body: bytes) -> ServedList:
    """A served list from the response body it was answered with."""
    items = pydantic_core.from_json(body)["items"]
    return ServedList(user_id, version, served_at, tuple(i["item_id"] for i in items),
                      "".join(ServedList.flag(i["new"], i["reserved"]) for i in items))
