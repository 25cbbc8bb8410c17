"""The service part of :mod:`benchmarks.catalogue_scale`: synthetic bundles of growing catalogues
served by ``python -m service`` with ``RECSYS_INDEX_TYPE=auto``, measured side by side."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import redis
import scipy.sparse as sp

import bundle as bundle_format
from benchmarks.ann import synthetic_catalog
from benchmarks.http_load import free_port, script_users, stage_line, stage_totals, start, wrk
from benchmarks.serving_quick import service_env

USERS = 10_000
SEEN = 20  # items each user has seen: the miss path excludes them
ROUNDS = 3
CONCURRENCY = 8


def write_synthetic_bundle(path: Path, n_items: int, dim: int, seed: int = 0) -> Path:
    """A bundle of ``n_items`` clustered item vectors and ``USERS`` user vectors drawn around
    the same centres, each user with ``SEEN`` seen items; no towers (an ID model's bundle)."""
    items, users = synthetic_catalog(n_items, dim, seed=seed, queries=USERS)
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(USERS), SEEN)
    cols = rng.integers(0, n_items, USERS * SEEN)
    interactions = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                 shape=(USERS, n_items))
    interactions.data[:] = 1.0  # a repeated draw is one seen item
    return bundle_format.write_bundle(
        path, manifest={"version": f"synthetic-{n_items}", "model": "synthetic",
                        "modalities": [], "serving": {"new_item_slots": 0.0}},
        user_embeddings=users, item_embeddings=items, user_ids=[f"u{n}" for n in range(USERS)],
        item_ids=[f"i{n}" for n in range(n_items)], interactions=interactions, overwrite=True)


def resident_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def redis_bytes_per_list(prefix: str, sample: int = 200) -> float:
    """Mean ``MEMORY USAGE`` of the cached lists under ``prefix`` (key, value and overhead)."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        keys.append(key)
        if len(keys) >= sample:
            break
    sizes = [client.memory_usage(key) or 0 for key in keys]
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    return statistics.mean(sizes) if sizes else float("nan")


def serve_section(sizes: list[int], dim: int, workdir: Path, duration: float,
                  target: float) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    services, rows = {}, {}
    try:
        for n in sizes:
            path = write_synthetic_bundle(workdir / f"bundle-{n}", n, dim)
            port = free_port()
            env = {**service_env(path, port, workdir / f"state-{n}"),
                   "RECSYS_INDEX_TYPE": "auto", "RECSYS_INDEX_RECALL": str(target),
                   "RECSYS_VERIFY_BUNDLE": "true", "RECSYS_SERVED_SAMPLE": "0"}
            (workdir / f"state-{n}").mkdir(exist_ok=True)
            started = time.perf_counter()
            services[n] = start([sys.executable, "-m", "service"], port, "/readyz", env,
                                log=workdir / f"service-{n}.log", timeout=1800)
            ready_s = time.perf_counter() - started
            index = httpx.get(services[n].url + "/readyz", timeout=10).json()["index"]
            rows[n] = {"ready_s": ready_s, "index": index, "rps": [], "p50": [], "p99": [],
                       "prefix": env["RECSYS_CACHE_PREFIX"]}
            print(f"service {n:,} items ready in {ready_s:.1f} s: {index}", flush=True)
        users = [f"u{n}" for n in range(USERS)]
        for round_ in range(ROUNDS):  # interleaved: every size sees the same machine
            for n, service in services.items():
                script = script_users(workdir / f"miss-{n}-{round_}.lua", users,
                                      k_base=30 + 10 * round_)
                before = stage_totals(service.url)
                result = wrk(service.url, CONCURRENCY, duration, script)
                row = rows[n]
                row["rps"].append(result["rps"])
                row["p50"].append(result["p50_ms"])
                row["p99"].append(result["p99_ms"])
                row["stages"] = stage_line(before, stage_totals(service.url),
                                           result["rps"] * duration)
                print(f"round {round_ + 1} {n:>10,} items: {result['rps']:7.0f} misses/s "
                      f"p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms, "
                      f"errors {result['errors']}; {row['stages']}", flush=True)
        for n, service in services.items():
            rows[n]["rss"] = resident_gib(service.process.pid)
            rows[n]["redis"] = redis_bytes_per_list(rows[n]["prefix"])
    finally:
        for service in services.values():
            service.stop()
    return serve_table(rows, target)


def serve_table(rows: dict[int, dict], target: float) -> list[str]:
    base = statistics.median(rows[min(rows)]["rps"]) if rows else 1.0
    lines = [
        f"## The service (`RECSYS_INDEX_TYPE=auto`, Recall@100 target {target:g})", "",
        f"{USERS:,} users with {SEEN} seen items each; cache misses at c={CONCURRENCY}, every "
        f"request a new key, median of {ROUNDS} interleaved rounds; ready = process start to "
        "`/readyz` 200 with the bundle's checksums verified (what a publish costs a replica); "
        "resident = the replica's anonymous memory after the load.", "",
        "| items | index (from /readyz) | Recall@100 at load | ready s | resident GiB "
        "| misses/s | vs smallest | p50 ms | p99 ms | Redis bytes a cached list |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, row in rows.items():
        index = row["index"]
        params = ", ".join(f"{k}={v}" for k, v in index["params"].items())
        kind = index["kind"] + (f" ({params})" if params else "")
        recall = "exact" if index["recall"] is None else f"{index['recall']:.3f}"
        rps = statistics.median(row["rps"])
        lines.append(f"| {n:,} | {kind} | {recall} | {row['ready_s']:.1f} | {row['rss']:.2f} "
                     f"| {rps:,.0f} | {rps / base:.2f}x | {statistics.median(row['p50']):.2f} "
                     f"| {statistics.median(row['p99']):.2f} | {row['redis']:,.0f} |")
    lines += ["", "Stages of a miss in the last round (`recsys_stage_seconds`):", ""]
    lines += [f"- {n:,} items: {row['stages']}" for n, row in rows.items()]
    return lines
