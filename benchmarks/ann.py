"""Exact against approximate FAISS indexes on a synthetic catalogue at the bundle's width (the
serving benchmark's index section, :mod:`benchmarks.serving`)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.index import IndexConfig, build_faiss, set_threads  # noqa: E402
from service.index_plan import recall_at  # noqa: E402


def synthetic_catalog(n: int, dim: int, seed: int = 0, queries: int = 0):
    """Clustered vectors (like trained embeddings, unlike uniform noise): 2,000 centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    data = np.empty((n, dim), np.float32)
    for start in range(0, n, 200_000):
        stop = min(n, start + 200_000)
        data[start:stop] = centres[rng.integers(0, 2000, stop - start)]
        data[start:stop] += 0.7 * rng.normal(size=(stop - start, dim)).astype(np.float32)
    q = centres[rng.integers(0, 2000, queries)] + rng.normal(size=(queries, dim)).astype(np.float32)
    return data, q.astype(np.float32)


def ann_section(n: int, dim: int, queries: int, k: int = 100) -> list[dict]:
    print(f"ANN: {n:,} synthetic items x {dim}-d, {queries} queries, Recall@{k}", flush=True)
    data, q = synthetic_catalog(n, dim, seed=7, queries=queries)
    rows: list[dict] = []

    def build(config: IndexConfig):
        set_threads(os.cpu_count() or 1)  # builds use every core; searches one, as served
        started = time.perf_counter()
        index = build_faiss(data, config)
        set_threads(1)
        return index, time.perf_counter() - started

    def measure(name: str, index, build_s: float) -> None:
        latencies = []
        found = []
        for query in q:
            started = time.perf_counter()
            _, ids = index.search(query[None], k)
            latencies.append(time.perf_counter() - started)
            found.append(ids[0])
        recall = recall_at(np.stack(found), truth)
        row = {"index": name, "build_s": build_s, "p50_ms": np.percentile(latencies, 50) * 1e3,
               "p99_ms": np.percentile(latencies, 99) * 1e3, "recall": recall}
        rows.append(row)
        print(f"  {name:<28} build {build_s:6.1f}s  p50 {row['p50_ms']:7.3f} ms  "
              f"p99 {row['p99_ms']:7.3f} ms  recall {recall:.3f}", flush=True)

    exact, seconds = build(IndexConfig(kind="flat"))
    _, truth = exact.search(q, k)
    measure("exact (IndexFlatIP)", exact, seconds)
    del exact

    ivf, seconds = build(IndexConfig(kind="ivf", nlist=1024))
    for nprobe in (8, 16, 32, 64):
        ivf.nprobe = nprobe
        measure(f"IVF1024 nprobe={nprobe}", ivf, seconds)
    del ivf

    hnsw, seconds = build(IndexConfig(kind="hnsw", hnsw_m=32, ef_construction=64))
    for ef in (128, 256, 512):
        hnsw.hnsw.efSearch = ef
        measure(f"HNSW32 efSearch={ef}", hnsw, seconds)
    return rows
