"""FAISS index: exact equals brute force, tombstones, approximate recall, thread safety."""

from __future__ import annotations

import os
import threading
from dataclasses import replace

import numpy as np
import pytest

from service.index import IndexConfig, ItemIndex, choose_device, set_threads
from service.index_plan import (
    PLATEAU,
    calibration_queries,
    choose_kind,
    exact_top,
    nlist_for,
    pq_bytes_for,
    recall_at,
    set_depth,
)


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """As served (RECSYS_FAISS_THREADS=1): OpenMP threads spin, and on shared cores a PQ
    build with two of them took 7x longer than with one."""
    set_threads(1)


def brute_force(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    scores = vectors @ query
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def random_catalog(n: int, dim: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"i{i}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32)


def test_exact_search_equals_brute_force_top_k():
    ids, vectors = random_catalog(2000, 24)
    index = ItemIndex(ids, vectors)
    queries = np.random.default_rng(1).normal(size=(8, 24)).astype(np.float32)
    for query, hits in zip(queries, index.search(queries, 50), strict=True):
        assert [i for i, _ in hits] == brute_force(vectors, ids, query, 50)
        assert np.allclose([s for _, s in hits], np.sort(vectors @ query)[::-1][:50], atol=1e-4)


def test_upserts_deletes_and_exclusions_are_respected():
    ids, vectors = random_catalog(300, 8)
    index = ItemIndex(ids, vectors)
    query = np.ones(8, np.float32)
    top = [i for i, _ in index.search(query, 5)[0]]

    index.remove(top[0])  # deleted: never returned
    index.upsert(["new"], (query * 100)[None])  # online item far above everything
    index.upsert([top[1]], (-query * 100)[None])  # bundle item replaced by a bad vector
    hits = [i for i, _ in index.search(query, 5, [{top[2]}])[0]]

    assert hits[0] == "new"
    assert top[0] not in hits and top[1] not in hits and top[2] not in hits
    assert len(hits) == 5 and len(index) == 300  # one deleted, one added
    assert top[1] in index and top[0] not in index


def test_search_fills_k_when_many_rows_are_dead():
    ids, vectors = random_catalog(100, 8)
    index = ItemIndex(ids, vectors)
    query = np.ones(8, np.float32)
    for item_id, _ in index.search(query, 60)[0]:
        index.remove(item_id)
    live = [i for i in ids if i in index]
    hits = [i for i, _ in index.search(query, 30)[0]]
    assert hits == brute_force(vectors[[ids.index(i) for i in live]], live, query, 30)


def test_repeated_upserts_compact_the_delta_and_keep_results_exact():
    index = ItemIndex(*random_catalog(50, 8))
    rng = np.random.default_rng(2)
    latest = {}
    for _ in range(30):  # 30 x 100 upserts of the same 100 ids: compaction kicks in
        vectors = rng.normal(size=(100, 8)).astype(np.float32)
        ids = [f"o{i}" for i in range(100)]
        index.upsert(ids, vectors)
        latest.update(zip(ids, vectors, strict=True))
    query = rng.normal(size=8).astype(np.float32)
    all_ids = [f"i{i}" for i in range(50)] + list(latest)
    all_vectors = np.vstack([random_catalog(50, 8)[1], np.stack(list(latest.values()))])
    hits = [i for i, _ in index.search(query, 20)[0]]
    assert hits == brute_force(all_vectors, all_ids, query, 20)
    assert len(index) == 150


def clustered(n: int, dim: int = 16, seed: int = 3) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(50, dim)) * 3
    vectors = (centers[rng.integers(0, 50, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    return [f"i{i}" for i in range(n)], vectors


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_approximate_indexes_recall_exact_top_k(kind: str):
    rng = np.random.default_rng(3)
    ids, vectors = clustered(5000)
    # one byte a dimension: the default half a byte trains on the items, not on these queries
    approximate = ItemIndex(ids, vectors, IndexConfig(kind=kind, nprobe=16, ef_search=128,
                                                      pq_bytes=16))
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    recalls = [
        len({i for i, _ in hits} & set(brute_force(vectors, ids, q, 10))) / 10
        for q, hits in zip(queries, approximate.search(queries, 10), strict=True)
    ]
    assert np.mean(recalls) >= 0.9


def test_auto_picks_the_kind_by_catalogue_size_and_vector_memory():
    config = IndexConfig(kind="auto", exact_max_items=50_000, memory_gb=8.0)
    assert choose_kind(50_000, 352, config)[0] == "flat"
    assert choose_kind(1_000_000, 352, config)[0] == "ivf"  # 1.3 GiB of vectors
    kind, reason = choose_kind(10_000_000, 352, config)  # 13.1 GiB: codes instead
    assert kind == "ivfpq" and "13.1 GiB" in reason
    assert choose_kind(10, 352, IndexConfig(kind="hnsw"))[0] == "hnsw"
    assert nlist_for(10_000_000) == 4096 and nlist_for(1_000_000) == 1024
    assert nlist_for(100) == 2 and pq_bytes_for(352) == 176 and pq_bytes_for(10, 4) == 2


def test_calibration_takes_the_shallowest_depth_reaching_the_recall_target():
    ids, vectors = clustered(6000)
    queries = vectors[:200] + np.random.default_rng(5).normal(size=(200, 16)).astype(np.float32)
    index = ItemIndex(ids, vectors, IndexConfig(kind="auto", exact_max_items=1000,
                                                recall_target=0.9), queries=queries)
    plan = index.plan
    assert plan.kind == "ivf" and plan.recall >= 0.9 and plan.recall_target == 0.9
    # the next shallower depth misses the target: calibration did not over-search
    truth = exact_top(vectors, queries)
    shallower = plan.params["nprobe"] // 2
    if shallower:
        set_depth(index._main, "ivf", shallower)
        assert recall_at(index._main.search(queries, 100)[1], truth) < 0.9
    explicit = ItemIndex(ids, vectors, IndexConfig(kind="ivf", nprobe=1), queries=queries)
    assert explicit.plan.params["nprobe"] == 1 and explicit.plan.recall < plan.recall


def test_auto_replaces_an_ivf_that_would_probe_half_its_lists():
    ids, vectors = random_catalog(4000, 32)  # no clusters: IVF must probe nearly every list
    config = IndexConfig(kind="auto", exact_max_items=1000, recall_target=0.99)
    plan = ItemIndex(ids, vectors, config).plan
    assert plan.kind == "hnsw" and plan.recall >= 0.99 and "HNSW instead" in plan.reason
    plan = ItemIndex(ids, vectors, replace(config, hnsw_max_items=1000)).plan  # too many
    assert plan.kind == "flat" and "exact search instead" in plan.reason


def test_an_unreachable_target_stops_where_recall_stops_growing():
    ids, vectors = clustered(3000)
    index = ItemIndex(ids, vectors, IndexConfig(kind="ivfpq", pq_bytes=1, recall_target=1.0))
    plan = index.plan
    assert plan.recall < 1.0 and len(index.search(vectors[:3], 10)[0]) == 10
    # one step deeper adds less than PLATEAU (or there is no deeper step)
    depth, nlist = plan.params["nprobe"], plan.params["nlist"]
    if depth < nlist:
        sample = calibration_queries(vectors, None)
        set_depth(index._main, "ivfpq", 2 * depth)
        deeper = recall_at(index._main.search(sample, 100)[1], exact_top(vectors, sample))
        assert deeper - plan.recall < PLATEAU


def test_exact_search_reports_no_recall():
    ids, vectors = random_catalog(500, 8)
    plan = ItemIndex(ids, vectors, IndexConfig(kind="auto")).plan
    assert plan.kind == "flat" and plan.recall is None and plan.params == {}


def test_searches_on_worker_threads_use_the_configured_faiss_threads():
    """OpenMP keeps its thread count per native thread: a search on a fresh thread (the
    service's thread pool) must not fall back to every core."""
    import faiss

    ids, vectors = random_catalog(200, 8)
    index = ItemIndex(ids, vectors)
    seen = {}

    def search() -> None:
        seen["before"] = faiss.omp_get_max_threads()
        index.search(vectors[:2], 5)
        seen["after"] = faiss.omp_get_max_threads()

    set_threads(1)
    worker = threading.Thread(target=search)
    worker.start()
    worker.join()
    assert seen["after"] == 1
    if (os.cpu_count() or 1) > 1 and "OMP_NUM_THREADS" not in os.environ:
        assert seen["before"] > 1  # the fresh thread's own default: what the fix overrides


def test_choose_device_prefers_gpu_only_when_present():
    assert choose_device("auto", 0) == "cpu"
    assert choose_device("auto", 2) == "gpu"
    assert choose_device("cpu", 2) == "cpu"
    assert choose_device("gpu", 1) == "gpu"
    with pytest.raises(ValueError, match="no GPU"):
        choose_device("gpu", 0)


def test_concurrent_upserts_and_searches_give_consistent_results():
    dim = 16
    ids, vectors = random_catalog(1000, dim)
    index = ItemIndex(ids, vectors)
    rng = np.random.default_rng(4)
    added = {f"n{i}": v for i, v in enumerate(rng.normal(size=(2000, dim)).astype(np.float32))}
    known = {**dict(zip(ids, vectors, strict=True)), **added}
    errors: list[str] = []
    done = threading.Event()

    def writer() -> None:
        names = list(added)
        for start in range(0, len(names), 50):
            batch = names[start : start + 50]
            index.upsert(batch, np.stack([added[n] for n in batch]))
        done.set()

    def reader(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not done.is_set():
            query = local.normal(size=dim).astype(np.float32)
            hits = index.search(query, 20)[0]
            names = [i for i, _ in hits]
            scores = [s for _, s in hits]
            if len(hits) != 20 or len(set(names)) != 20 or scores != sorted(scores, reverse=True):
                errors.append(f"malformed result {hits}")
            for name, score in hits:  # every score is the exact score of that item's vector
                if abs(float(known[name] @ query) - score) > 1e-3:
                    errors.append(f"{name}: score {score} != {known[name] @ query}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    all_ids, all_vectors = list(known), np.stack(list(known.values()))
    query = rng.normal(size=dim).astype(np.float32)
    hits = [i for i, _ in index.search(query, 30)[0]]
    assert hits == brute_force(all_vectors, all_ids, query, 30)
