"""FAISS: an immutable main index of the bundle's items plus a small exact delta index.

FAISS indexes are not safe for an add during a search. The main index (exact, IVF-Flat, IVF-PQ
or HNSW: :mod:`service.index_plan` chooses) is built once from the bundle and only read
afterwards; items that arrive online go to an exact delta index that is guarded by one lock.
Upserts and deletes leave tombstones: a row counts only while ``_where[item_id]`` still points
at it, and searches fetch enough extra rows to skip them.
A reload builds a fresh pair, which merges the delta into the main index.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Sequence, Set
from dataclasses import replace

import faiss
import numpy as np

from service.index_plan import (
    IndexConfig,
    IndexPlan,
    calibrate,
    calibration_queries,
    choose_kind,
    depth_name,
    exact_top,
    nlist_for,
    pq_bytes_for,
    recall_at,
    set_depth,
)

MAIN, DELTA = 0, 1
Hit = tuple[str, float]


_threads = 0  # set_threads' value (0: OpenMP's default)


def set_threads(threads: int) -> None:
    """FAISS's OpenMP threads. One is fastest for single queries arriving in parallel
    (measured on 2 cores, 200k items: 5.8 ms with 1 thread, 24 ms with 2). OpenMP keeps the
    number per native thread, and searches run on worker threads that never saw this call
    (they used every core): :func:`own_threads` applies it on the searching thread."""
    global _threads
    _threads = threads
    faiss.omp_set_num_threads(threads)


def own_threads() -> None:
    """Apply :func:`set_threads`' value on the calling thread (cheap: one assignment)."""
    if _threads:
        faiss.omp_set_num_threads(_threads)


def gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def choose_device(requested: str, gpus: int) -> str:
    """``auto`` takes a GPU when FAISS sees one; ``gpu`` without one is a configuration error."""
    if requested == "cpu":
        return "cpu"
    if requested == "gpu" and gpus < 1:
        raise ValueError("index_device=gpu but FAISS sees no GPU (install faiss-gpu)")
    return "gpu" if gpus > 0 else "cpu"


def build_faiss(vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
    """An inner-product index of ``config.kind`` (not auto) over ``vectors`` (row = position),
    at FAISS's default search depth (:func:`plan_index` calibrates it)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if config.kind in ("ivf", "ivfpq") and n >= 2:
        nlist = nlist_for(n, config.nlist)
        size = 64 * nlist  # training points: k-means cost grows with them, recall barely does
        codes = "Flat"
        if config.kind == "ivfpq":
            # a code's sub-quantisers have 256 centroids, fewer for catalogues too small to
            # train them (39 points each)
            bits = min(8, max(1, int(math.log2(max(2, n // 39)))))
            codes = f"PQ{pq_bytes_for(dim, config.pq_bytes)}x{bits}np"
            size = max(size, 39 * 2**bits)
        index = faiss.index_factory(dim, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
        if config.kind == "ivfpq":  # each sub-quantiser's k-means: 64 points a centroid
            faiss.downcast_index(index).pq.cp.max_points_per_centroid = 64
        sample = vectors
        if n > size:
            rows = np.random.default_rng(0).choice(n, size, replace=False)
            sample = vectors[np.sort(rows)]
        index.train(sample)
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
    else:
        index = faiss.IndexFlatIP(dim)
    if gpu_kind(config):
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
        index.resources_keepalive = resources  # the GPU index does not own them
    index.add(vectors)
    return index


def gpu_kind(config: IndexConfig) -> bool:
    """FAISS has no GPU HNSW, and its GPU IVF-PQ takes few code sizes: those stay on the CPU."""
    return config.device == "gpu" and config.kind in ("flat", "ivf")


def plan_index(vectors: np.ndarray, config: IndexConfig,
               queries: np.ndarray | None = None) -> tuple[faiss.Index, IndexPlan]:
    """Choose the kind (``auto``), build it, and set its search depth: the one configured, or
    the smallest reaching the recall target on a sample of ``queries`` (see
    :mod:`service.index_plan`); the plan records the Recall@100 measured either way."""
    started = time.perf_counter()
    n, dim = vectors.shape
    kind, reason = choose_kind(n, dim, config)
    sample = truth = None  # exact search needs no calibration
    if depth_name(kind) is not None and n > 0:
        sample = calibration_queries(vectors, queries)
        truth = exact_top(vectors, sample)  # the one exact scan every calibration shares
    index, plan = _build_and_calibrate(vectors, replace(config, kind=kind), reason, sample,
                                       truth)
    depth = plan.params.get("nprobe", 0)
    if config.kind == "auto" and kind == "ivf" and 2 * depth >= plan.params["nlist"]:
        # probing half the lists or more costs what a scan does: a graph index, which does
        # not need clusters, when its build is affordable, else exact search
        why = (f"IVF needed nprobe={depth} of {plan.params['nlist']} lists for Recall@100 "
               f"{config.recall_target:g}")
        if n <= config.hnsw_max_items:
            index, plan = _build_and_calibrate(vectors, replace(config, kind="hnsw"),
                                               f"{why}: HNSW instead", sample, truth)
        if plan.kind != "hnsw" or plan.recall < config.recall_target:
            index, plan = _build_and_calibrate(vectors, replace(config, kind="flat"),
                                               f"{why}: exact search instead", sample, truth)
    plan.build_s = round(time.perf_counter() - started, 3)
    return index, plan


def _build_and_calibrate(vectors: np.ndarray, config: IndexConfig, reason: str,
                         sample: np.ndarray | None, truth: np.ndarray | None,
                         ) -> tuple[faiss.Index, IndexPlan]:
    """Build ``config.kind`` and set its depth: the configured one, or the calibrated one on
    ``sample`` (whose exact top-k is ``truth``); exact search has no depth and no recall."""
    n, dim = vectors.shape
    kind = config.kind
    index = build_faiss(vectors, config)
    plan = IndexPlan(kind=kind, reason=reason)
    depth = depth_name(kind)
    if depth is None or sample is None or truth is None:
        return index, plan
    nlist = nlist_for(n, config.nlist)
    plan.params = {
        "ivf": {"nlist": nlist},
        "ivfpq": {"nlist": nlist, "pq_bytes": pq_bytes_for(dim, config.pq_bytes)},
        "hnsw": {"m": config.hnsw_m, "ef_construction": config.ef_construction},
    }[kind]
    fixed = config.ef_search if kind == "hnsw" else config.nprobe
    gpu = gpu_kind(config)
    if fixed:
        set_depth(index, kind, fixed, gpu)
        chosen = (fixed, recall_at(index.search(sample, truth.shape[1])[1], truth))
    else:
        chosen = calibrate(index, kind, nlist, truth, sample, config.recall_target, gpu)
    plan.params[depth] = chosen[0]
    plan.recall, plan.recall_target = round(chosen[1], 4), config.recall_target
    return index, plan


def _score(hit: Hit) -> float:
    return hit[1]


class ItemIndex:
    """Top-K inner-product search over live items, safe under concurrent search and upsert."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, config: IndexConfig | None = None,
                 queries: np.ndarray | None = None):
        self.config = config or IndexConfig()
        self.dim = int(vectors.shape[1])
        self._main, self.plan = plan_index(
            np.ascontiguousarray(vectors, dtype=np.float32), self.config, queries)
        self._main_ids = list(ids)
        # GPU indexes are not safe even for concurrent searches.
        self._main_lock = threading.Lock() if gpu_kind(
            replace(self.config, kind=self.plan.kind)) else None
        self._delta = faiss.IndexFlatIP(self.dim)
        self._delta_ids: list[str] = []
        self._lock = threading.Lock()  # the one writer lock: delta index, _where, _dead
        self._where: dict[str, tuple[int, int]] = {}
        self._dead = [0, 0]
        for row, item_id in enumerate(self._main_ids):
            self._claim(item_id, (MAIN, row))

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._where

    def in_main(self, item_id: str) -> bool:
        return self._where.get(item_id, (DELTA, 0))[0] == MAIN

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            start = self._delta.ntotal
            self._delta.add(vectors)
            for offset, item_id in enumerate(ids):
                self._delta_ids.append(item_id)
                self._claim(item_id, (DELTA, start + offset))
            if self._dead[DELTA] > max(1024, self._delta.ntotal // 2):
                self._compact_delta()

    def remove(self, item_id: str) -> bool:
        with self._lock:
            old = self._where.pop(item_id, None)
            if old is not None:
                self._dead[old[0]] += 1
            return old is not None

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Set[str]] | None = None
    ) -> list[list[Hit]]:
        """Top ``k`` live items per query, best first, skipping each query's ``exclude`` set."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        excludes = list(exclude) if exclude is not None else [frozenset()] * len(queries)
        return self._search(queries, k, excludes, k + max((len(e) for e in excludes), default=0))

    def _search(
        self, queries: np.ndarray, k: int, excludes: list[Set[str]], fetch: int
    ) -> list[list[Hit]]:
        own_threads()
        main_total = self._main.ntotal
        main_fetch = min(fetch + self._dead[MAIN], main_total)
        if main_fetch > 0:
            with self._main_lock or contextlib.nullcontext():
                main_scores, main_rows = self._main.search(queries, main_fetch)
        with self._lock:  # delta rows are read under the lock: compaction renumbers them
            delta_total = self._delta.ntotal
            delta_fetch = min(fetch + self._dead[DELTA], delta_total)
            delta_hits: list[list[Hit]] = [[] for _ in queries]
            if delta_fetch > 0:
                scores, rows = self._delta.search(queries, delta_fetch)
                for q, hits in enumerate(delta_hits):
                    hits.extend(self._live(DELTA, self._delta_ids, rows[q], scores[q]))
        results = []
        for q, hits in enumerate(delta_hits):
            if main_fetch > 0:
                main_hits = self._live(MAIN, self._main_ids, main_rows[q], main_scores[q])
                hits = hits + main_hits if hits else main_hits  # FAISS sorts each segment
            exclude = excludes[q]
            if exclude:
                hits = [hit for hit in hits if hit[0] not in exclude]
            if delta_hits[q]:
                hits.sort(key=_score, reverse=True)
            exhausted = main_fetch >= main_total and delta_fetch >= delta_total
            if len(hits) < k and not exhausted:
                # More tombstones or exclusions than fetched (e.g. deletes during the search).
                hits = self._search(queries[q : q + 1], k, [excludes[q]], fetch * 2)[0]
            results.append(hits[:k])
        return results

    def _live(
        self, segment: int, ids: list[str], rows: np.ndarray, scores: np.ndarray
    ) -> list[Hit]:
        if not self._dead[segment]:  # no tombstones: every row found is live
            return [(ids[row], score) for row, score in zip(rows.tolist(), scores.tolist(),
                                                           strict=True) if row >= 0]
        where = self._where
        return [
            (ids[row], score)
            for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
            if row >= 0 and where.get(ids[row]) == (segment, row)
        ]

    def _claim(self, item_id: str, location: tuple[int, int]) -> None:
        old = self._where.get(item_id)
        if old is not None:
            self._dead[old[0]] += 1
        self._where[item_id] = location

    def _compact_delta(self) -> None:
        """Drop dead delta rows (caller holds the lock)."""
        live = [(i, row) for i, (seg, row) in self._where.items() if seg == DELTA]
        vectors = np.stack([self._delta.reconstruct(row) for _, row in live]) if live else None
        self._delta = faiss.IndexFlatIP(self.dim)
        self._delta_ids = [i for i, _ in live]
        if vectors is not None:
            self._delta.add(vectors)
        for row, item_id in enumerate(self._delta_ids):
            self._where[item_id] = (DELTA, row)
        self._dead[DELTA] = 0
