"""Which FAISS index serves a catalogue, with which parameters, and what recall it reached.

``index_type=auto`` (the default) chooses by catalogue size and by the memory the raw vectors
would take (thresholds measured by ``benchmarks/catalogue_scale.py``, results in
``benchmarks/results/catalogue_scale.md``):

- up to ``exact_max_items`` (50,000) items: exact inner product. Its search is a scan, but a
  scan of 50,000 x 352 floats batched over a miss batch costs about what IVF's probing does,
  with recall 1.
- raw float32 vectors within ``memory_gb`` (8 GiB: about 6 million 352-d items): IVF-Flat,
  which keeps the vectors and loses recall only to the lists it does not probe; unless
  reaching the target takes probing half its lists or more (vectors without cluster
  structure at the lists' grain), where a scan costs the same: then HNSW up to
  ``hnsw_max_items`` (1,000,000: its build took 28 s at 10^5 items and 235 s at 10^6 on 2
  cores), calibrated the same way, and exact search if HNSW misses the target too.
- above: IVF-PQ with ``dim / 2`` one-byte codes (8x smaller than float32; ``pq_bytes`` sets
  it), which also loses recall to the codes.

HNSW is otherwise chosen only by name (``index_type=hnsw``): it builds about 10x slower than IVF
and its graph costs memory on top of the vectors.

An approximate index's search depth (IVF ``nprobe``, HNSW ``efSearch``) is then calibrated at
build time unless set: the smallest depth of a doubling ladder whose Recall@100 against the
exact top-100 reaches ``recall_target`` (0.95) on a sample of real queries (the bundle's user
vectors, else its item vectors). A target the index cannot reach (IVF-PQ's codes cap its
recall) keeps the depth where recall stopped growing and says so in the plan (``/readyz``
shows the recall reached), rather than failing the load or scanning every list.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np

RECALL_AT = 100
CALIBRATION_QUERIES = 256
PLATEAU = 0.005  # recall a doubled search depth must add to be worth its cost


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "flat"  # auto | flat | ivf | ivfpq | hnsw
    device: str = "cpu"
    nlist: int = 0  # 0: a power of two near sqrt(n) (nlist_for)
    nprobe: int = 0  # 0: calibrated to recall_target
    pq_bytes: int = 0  # 0: dim / 2 (ivfpq)
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 0  # 0: calibrated to recall_target
    recall_target: float = 0.95
    exact_max_items: int = 50_000
    memory_gb: float = 8.0
    hnsw_max_items: int = 1_000_000


@dataclass
class IndexPlan:
    """What was built: reported by ``/readyz`` and logged on every load."""

    kind: str
    params: dict[str, int] = field(default_factory=dict)
    recall: float | None = None  # measured Recall@100 on the calibration sample; None: exact
    recall_target: float | None = None
    build_s: float = 0.0
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def choose_kind(n: int, dim: int, config: IndexConfig) -> tuple[str, str]:
    """The index kind for ``n`` items of ``dim`` floats, and why."""
    if config.kind != "auto":
        return config.kind, "set by RECSYS_INDEX_TYPE"
    if n <= config.exact_max_items:
        return "flat", f"{n:,} items <= {config.exact_max_items:,}: exact search"
    raw_gb = n * dim * 4 / 2**30
    if raw_gb <= config.memory_gb:
        return "ivf", f"{n:,} items, {raw_gb:.1f} GiB of vectors <= {config.memory_gb:g} GiB"
    return "ivfpq", f"{n:,} items, {raw_gb:.1f} GiB of vectors > {config.memory_gb:g} GiB: codes"


def nlist_for(n: int, requested: int = 0) -> int:
    """IVF lists: the power of two nearest sqrt(n), between 1 and 4,096, and at most n / 39
    (FAISS wants about 39 training points a list). Build time grows with n * nlist, so the
    cap keeps a 10^7-item build in minutes on a few cores."""
    nlist = requested or 2 ** round(math.log2(max(1.0, math.sqrt(n))))
    return max(1, min(nlist, 4096, n // 39))


def pq_bytes_for(dim: int, requested: int = 0) -> int:
    """Bytes of a PQ code: ``requested`` or dim / 2, lowered to a divisor of ``dim``."""
    m = max(1, min(requested or dim // 2, dim))
    while dim % m:
        m -= 1
    return m


def depth_name(kind: str) -> str | None:
    """The search-depth parameter of an approximate kind (FAISS's name for it)."""
    return {"ivf": "nprobe", "ivfpq": "nprobe", "hnsw": "efSearch"}.get(kind)


def set_depth(index: faiss.Index, kind: str, depth: int, gpu: bool = False) -> None:
    # GpuParameterSpace exists only in faiss-gpu builds, and a GPU index needs it
    space = faiss.GpuParameterSpace() if gpu else faiss.ParameterSpace()
    space.set_index_parameter(index, depth_name(kind), depth)


def depth_ladder(kind: str, nlist: int) -> list[int]:
    if kind == "hnsw":
        return [2**p for p in range(4, 13)]  # 16 .. 4096
    return sorted({min(2**p, nlist) for p in range(13)})


def calibrate(index: faiss.Index, kind: str, nlist: int, truth: np.ndarray,
              queries: np.ndarray, target: float, gpu: bool = False) -> tuple[int, float]:
    """The smallest search depth whose Recall@k reaches ``target`` on ``queries``,
    ``truth`` being their exact top-k. A target the index cannot reach (codes too coarse)
    stops the ladder where doubling the depth gains less than ``PLATEAU`` recall: deeper
    would cost twice as much for what the codes cannot give."""
    best = (0, 0.0)
    for depth in depth_ladder(kind, nlist):
        set_depth(index, kind, depth, gpu)
        recall = recall_at(index.search(queries, truth.shape[1])[1], truth)
        if best[0] and recall - best[1] < PLATEAU:
            break
        best = (depth, recall)
        if recall >= target:
            break
    set_depth(index, kind, best[0], gpu)
    return best


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = RECALL_AT) -> np.ndarray:
    """Row numbers of each query's exact top-``k`` by inner product."""
    return faiss.knn(queries, vectors, min(k, len(vectors)), metric=faiss.METRIC_INNER_PRODUCT)[1]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each exact top-k found by the approximate search."""
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth,
                                                                        strict=True)]))


def calibration_queries(vectors: np.ndarray, queries: np.ndarray | None,
                        count: int = CALIBRATION_QUERIES, seed: int = 0) -> np.ndarray:
    """A sample of real queries (or, without any, of the items themselves)."""
    pool = queries if queries is not None and len(queries) else vectors
    rows = np.random.default_rng(seed).choice(len(pool), min(count, len(pool)), replace=False)
    return np.ascontiguousarray(pool[np.sort(rows)], dtype=np.float32)
