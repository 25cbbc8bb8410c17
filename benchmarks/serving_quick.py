"""``benchmarks/serving.py --quick``: the floor, a cache hit and a cache miss of GET /recommend
in interleaved rounds, each cell's ratio to the floor of its own round, and the mean time a
request spends in each timed stage (``recsys_stage_seconds``: FAISS, Redis, towers, store)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import bundle as bundle_format
from benchmarks.http_load import (
    FLOOR_APP,
    cache_counts,
    free_port,
    hit_ratio,
    script_users,
    stage_line,
    stage_totals,
    start,
    wrk,
)


def service_env(bundle_path: Path, port: int, workdir: Path) -> dict[str, str]:
    """The benchmarked service's settings: fresh store and cache keys, no auth (writes opened
    explicitly), no access log."""
    return {
        "RECSYS_BUNDLE": str(bundle_path),
        "RECSYS_PORT": str(port),
        "RECSYS_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "RECSYS_CACHE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "RECSYS_CACHE_TTL_S": "3600",
        "RECSYS_ACCESS_LOG": "false",
        "RECSYS_API_KEY": "",
        "RECSYS_OPEN_WRITES": "true",
        "RECSYS_VERIFY_BUNDLE": "false",
    }


def quick_section(bundle_path: Path, workdir: Path, duration: float, rounds: int,
                  concurrency: int) -> None:
    """Floor, cache hit and cache miss side by side, ``rounds`` times; ratios per round."""
    bundle = bundle_format.load_bundle(bundle_path, check=False)
    floor_port, port = free_port(), free_port()
    env = service_env(bundle_path, port, workdir)
    floor = start([sys.executable, "-c", FLOOR_APP, str(floor_port)], floor_port, "/")
    try:
        service = start([sys.executable, "-m", "service"], port, "/readyz", env,
                        log=workdir / "service.log")
    except BaseException:
        floor.stop()
        raise
    try:
        hot = script_users(workdir / "hot.lua", bundle.user_ids[:64])
        wrk(service.url, concurrency, 1, hot)  # warm the 64 hot keys
        wrk(floor.url + "/", concurrency, 1)
        users = list(bundle.user_ids)
        ratios: dict[str, list[tuple[float, float]]] = {"hit": [], "miss": []}
        for n in range(rounds):
            base = wrk(floor.url + "/", concurrency, duration)
            cold = script_users(workdir / f"cold{n}.lua", users, k_base=30 + 10 * n)
            line = [f"round {n + 1}: floor {base['rps']:7.0f} req/s p99 {base['p99_ms']:6.2f} ms"]
            for name, script in (("hit", hot), ("miss", cold)):
                before, stages_before = cache_counts(service.url), stage_totals(service.url)
                result = wrk(service.url, concurrency, duration, script)
                note = (hit_ratio(before, cache_counts(service.url)) + "; " + stage_line(
                    stages_before, stage_totals(service.url), result["rps"] * duration))
                rps, p99 = result["rps"] / base["rps"], result["p99_ms"] / base["p99_ms"]
                ratios[name].append((rps, p99))
                line.append(f"{name} {result['rps']:7.0f} req/s p99 {result['p99_ms']:6.2f} ms "
                            f"({rps:.2f}x rps, {p99:.2f}x p99, {note}, errors "
                            f"{result['errors']})")
            print("\n  ".join(line), flush=True)
        for name, values in ratios.items():
            rps = sorted(v[0] for v in values)
            p99 = sorted(v[1] for v in values)
            print(f"{name}: median {rps[len(rps) // 2]:.2f}x floor rps "
                  f"(rounds {', '.join(f'{v:.2f}' for v in rps)}), median "
                  f"{p99[len(p99) // 2]:.2f}x floor p99 (rounds "
                  f"{', '.join(f'{v:.2f}' for v in p99)}), c={concurrency}", flush=True)
    finally:
        service.stop()
        floor.stop()
