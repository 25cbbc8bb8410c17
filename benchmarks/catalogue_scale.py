"""Catalogue scale: FAISS indexes from 10^4 to 10^7 items at the served dimension, and the
service itself on synthetic bundles of 10^4 to 10^6 items.

python benchmarks/catalogue_scale.py                      # 10^4 .. 10^7, then the service
python benchmarks/catalogue_scale.py --sizes 10000,100000 --serve-sizes 10000 --quick

Index part (one process; builds with every core, searches with one FAISS thread, as served):
for every size and index kind, the build time, the index's size (its serialised bytes), the
search depth the service's own
calibration (:func:`service.index.plan_index`) picks for Recall@100 >= the target on
``--queries`` held-out queries, the recall then measured on other queries, and the latency of
single-query searches from 8 threads at once (p50/p99) with their throughput. Exact search runs
up to 10^6 items (at 10^7 it would hold 13 GiB of floats); 10^7 runs IVF-PQ only (compressed
codes); HNSW up to ``--hnsw-max`` (its build is the slowest). Vectors are
:func:`benchmarks.ann.synthetic_catalog`'s clustered ones (2,000 centres), queries drawn
around the same centres.

Service part: a synthetic bundle per size (the same vectors, 10,000 users with 20 seen items
each, no towers) served by ``python -m service`` with ``RECSYS_INDEX_TYPE=auto``: the seconds
from process start to ``/readyz`` (a publish does the same: load, check, build, calibrate),
the index ``/readyz`` reports, the process's resident memory, cache misses at c=8 (``wrk``,
every request a new key), and the Redis memory of one cached list. Writes
``benchmarks/results/catalogue_scale.md`` (indexes) and ``catalogue_serving.md`` (the service);
``--sizes ""`` or ``--serve-sizes ""`` skips a part.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ann import synthetic_catalog  # noqa: E402
from benchmarks.catalogue_serving import serve_section  # noqa: E402
from service.index import IndexConfig, own_threads, plan_index, set_threads  # noqa: E402
from service.index_plan import exact_top, recall_at  # noqa: E402

DIM = 352  # the served TikTok bundle's width
RESULTS = ROOT / "benchmarks" / "results" / "catalogue_scale.md"
SERVING_RESULTS = ROOT / "benchmarks" / "results" / "catalogue_serving.md"


def index_gib(index) -> float:
    """The index's own size (its serialised bytes: vectors or codes, lists, graph), GiB."""
    return faiss.serialize_index(index).nbytes / 2**30


def concurrent_latency(index, queries: np.ndarray, k: int, seconds: float,
                       threads: int = 8) -> tuple[float, float, float]:
    """p50 and p99 ms of single-query searches from ``threads`` threads at once, and the
    searches a second they achieved together."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.perf_counter() + seconds

    def run(slot: int) -> None:
        own_threads()  # OpenMP's thread count is per native thread
        n = slot
        while time.perf_counter() < stop:
            started = time.perf_counter()
            index.search(queries[n % len(queries)][None], k)
            latencies[slot].append(time.perf_counter() - started)
            n += threads

    workers = [threading.Thread(target=run, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    flat = np.concatenate([np.asarray(x) for x in latencies]) * 1e3
    return float(np.percentile(flat, 50)), float(np.percentile(flat, 99)), len(flat) / seconds


def kinds_for(n: int, hnsw_max: int) -> list[str]:
    kinds = ["flat", "ivf"] if n <= 1_000_000 else []
    kinds.append("ivfpq")
    if n <= hnsw_max:
        kinds.append("hnsw")
    return kinds


def index_section(sizes: list[int], dim: int, calibration: int, probes: int, seconds: float,
                  target: float, hnsw_max: int) -> list[dict]:
    rows = []
    for n in sizes:
        data, queries = synthetic_catalog(n, dim, seed=7, queries=calibration + probes)
        fit, probe = queries[:calibration], queries[calibration:]
        truth = exact_top(data, probe)
        for kind in kinds_for(n, hnsw_max):
            set_threads(os.cpu_count() or 1)  # builds use every core, searches one
            index, plan = plan_index(data, IndexConfig(kind=kind, recall_target=target), fit)
            set_threads(1)
            added = index_gib(index)
            recall = 1.0 if kind == "flat" else recall_at(index.search(probe, 100)[1], truth)
            p50, p99, qps = concurrent_latency(index, probe, 100, seconds)
            row = {"items": n, "kind": kind, "build_s": plan.build_s, "memory_gib": added,
                   "params": plan.params, "recall": recall, "p50_ms": p50, "p99_ms": p99,
                   "qps": qps}
            rows.append(row)
            print(f"{n:>10,} {kind:<6} build {plan.build_s:7.1f} s  +{added:6.2f} GiB  "
                  f"{plan.params}  Recall@100 {recall:.3f}  p50 {p50:7.2f} ms  p99 {p99:7.2f}"
                  f" ms  {qps:8.0f} searches/s", flush=True)
            del index
        del data
    return rows


def index_table(rows: list[dict], target: float) -> list[str]:
    lines = [
        f"## Indexes (calibrated to Recall@100 >= {target:g} on held-out queries)", "",
        "| items | index | build s | memory GiB | parameters | Recall@100 | p50 ms | p99 ms "
        "| searches/s (8 threads) |",
        "| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        lines.append(f"| {r['items']:,} | {r['kind']} | {r['build_s']:.1f} | "
                     f"{r['memory_gib']:.2f} | {params} | {r['recall']:.3f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['qps']:,.0f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--serve-sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--hnsw-max", type=int, default=1_000_000)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each wrk run")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/catalogue-scale"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serving-out", type=Path, default=SERVING_RESULTS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    serve_sizes = [int(s) for s in args.serve_sizes.split(",") if s]
    command = "python benchmarks/catalogue_scale.py " + shlex.join(argv or sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = index_section(sizes, args.dim, args.calibration, args.probes, args.seconds,
                         args.target, args.hnsw_max) if sizes else []
    serve_lines = serve_section(serve_sizes, args.dim, args.workdir, args.duration,
                                args.target) if serve_sizes else []
    header = [f"```\n{command.strip()}\n```", "",
              f"Run {started} on {os.cpu_count()} cores; {args.dim}-d synthetic clustered vectors "
              "(benchmarks/ann.py).", ""]
    if rows:
        write(args.out, ["# Catalogue scale: indexes", "", *header,
                         "Memory is the index's serialised size (vectors or codes, lists, graph); "
                         "latency is single-query searches from 8 threads on these cores.", "",
                         *index_table(rows, args.target)])
    if serve_lines:
        write(args.serving_out, ["# Catalogue scale: the service", "", *header, *serve_lines])


def write(path: Path, lines: list[str]) -> None:
    text = "\n".join(lines).rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
