"""Replica convergence: two uvicorn replicas on one PostgreSQL store and one Redis; how long after
a write on replica A does replica B serve it (an upsert) or stop serving it (a delete)?

    python benchmarks/replicas.py [--writes 100] [--feed-poll 0.5]
    python benchmarks/replicas.py --races 1000


B is polled every 10 ms from the moment A acknowledged the write, through its ranking (a
``POST /recommend`` whose exclusion list changes each time, so no cached list answers): each
written item is built to rank first for the stored user u0, so "served" means "in B's index". Writes
``benchmarks/results/replicas.md`` (distribution per kind of write). Uses the test suite's
factory bundle (200 items); needs PostgreSQL on 127.0.0.1:5432 (database ``test``) and Redis.

With ``--races N``: N rounds, each a POST or a DELETE (drawn apart) of the same id sent to both
replicas at once (ids drawn from a few, so rounds build on each other's state); after each,
both replicas must answer ``GET /items/{id}`` as the store holds it (200 present, 404 deleted)
within the bound. A replica that still disagrees after 10 s has lost an acknowledged write.
Writes ``benchmarks/results/replica_races.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.testing import features_for, make_bundle  # noqa: E402
from client import RecsysClient  # noqa: E402
from eventlog.store import Store  # noqa: E402

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
KEY = "bench-key"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = _port()
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT,
                               env={**os.environ, **env, "RECSYS_PORT": str(port)},
                               stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"replica did not start: {log.read_text()[-2000:]}")


def _wait(check, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            return float("inf")
        time.sleep(0.01)
    return time.monotonic() - start


def _row(name: str, values: list[float]) -> str:
    a = np.array(values) * 1000
    cells = [f"{np.percentile(a, q):.0f}" for q in (50, 90, 99)]
    return f"| {name} | {len(a)} | " + " | ".join(cells) + f" | {a.max():.0f} |"


def _stop(servers: list[tuple[subprocess.Popen, str]], prefix: str) -> None:
    for process, _ in servers:
        process.terminate()
        process.wait(20)
    store = Store(POSTGRES_URL, prefix)
    store.drop()
    store.close()


def _races(args: argparse.Namespace, factory, prefix: str, a: httpx.Client,
           b: httpx.Client) -> None:
    """The ``--races`` mode (module docstring)."""
    store = Store(POSTGRES_URL, prefix)
    rng = np.random.default_rng(0)
    names = [f"race{n}" for n in range(8)]
    bodies = {name: {"items": [{"item_id": name, "features": factory.payload(
        features_for(factory, factory.item_embeddings[n]))}]} for n, name in enumerate(names)}

    def send(client: httpx.Client, name: str, post: bool) -> bool:
        """True when the write was acknowledged."""
        if post:
            return client.post("/items", json=bodies[name]).status_code == 200
        return client.delete(f"/items/{name}").status_code in (204, 404)

    acked = refused = lost = 0
    delays: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(args.races):
            name = str(rng.choice(names))
            ops = [pool.submit(send, client, name, bool(rng.random() < 0.5)) for client in (a, b)]
            results = [op.result() for op in ops]
            acked += sum(results)
            refused += len(results) - sum(results)
            item = store.get_item(name)
            expected = 200 if item is not None and not item.deleted else 404
            delay = _wait(lambda name=name, expected=expected: all(
                client.get(f"/items/{name}").status_code == expected for client in (a, b)))
            if delay == float("inf"):
                lost += 1
            else:
                delays.append(delay)
    store.close()
    lines = [
        "# DELETE/POST races across two replicas (one PostgreSQL store, one Redis)",
        "",
        "```",
        f"python benchmarks/replicas.py --races {args.races} --feed-poll {args.feed_poll}",
        "```",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores (shared with "
        "other work). Each round sends a POST or a DELETE (drawn apart) of one of 8 ids to both "
        "replicas at once, then waits until both answer GET /items/{id} as the store holds it; "
        f"RECSYS_FEED_POLL_S={args.feed_poll}.",
        "",
        "| rounds | writes acknowledged | refused | replicas that never converged (lost) "
        "| converged p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
        f"| {args.races} | {acked} | {refused} | {lost} | "
        + (" | ".join(f"{np.percentile(np.array(delays) * 1000, q):.0f}" for q in (50, 99))
           + f" | {max(delays) * 1000:.0f}" if delays else "– | – | –") + " |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / "replica_races.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--feed-poll", type=float, default=0.5)
    parser.add_argument("--races", type=int, default=0,
                        help="run N DELETE/POST races instead (see the module docstring)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="replicas-"))
    factory = make_bundle(tmp / "bundle")
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    env = {"RECSYS_BUNDLE": str(factory.path), "RECSYS_DATABASE_URL": POSTGRES_URL,
           "RECSYS_TABLE_PREFIX": prefix, "RECSYS_REDIS_URL": "redis://127.0.0.1:6379/0",
           "RECSYS_CACHE_PREFIX": prefix, "RECSYS_API_KEY": KEY, "RECSYS_ACCESS_LOG": "false",
           "RECSYS_FEED_POLL_S": str(args.feed_poll), "RECSYS_HOST": "127.0.0.1"}
    servers = [_start(env, tmp / f"replica{n}.log") for n in range(2)]
    a = RecsysClient(servers[0][1], api_key=KEY)
    b = RecsysClient(servers[1][1])
    rng = np.random.default_rng(0)
    mean = factory.user_embeddings.mean(axis=0)
    top = 10 * np.linalg.norm(factory.item_embeddings, axis=1).max() * mean / np.linalg.norm(mean)
    polls = iter(range(10**9))

    def first_of_b(user: str) -> str:  # a new exclusion each time: never a cached list
        return b.recommend(user, k=1, exclude=[f"nothing{next(polls)}"]).items[0].item_id

    if args.races:
        try:
            _races(args, factory, prefix,
                   *(httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=10)
                     for _, url in servers))
        finally:
            _stop(servers, prefix)
        return
    upserts, deletes = [], []
    try:
        for n in range(args.writes):  # one live bench item at a time: it ranks first on B
            a.upsert_items([{"item_id": f"bench{n}",  # a RecsysError unless acknowledged
                             "features": factory.payload(features_for(factory, top))}])
            upserts.append(_wait(lambda n=n: first_of_b("u0") == f"bench{n}"))
            time.sleep(rng.uniform(0, args.feed_poll))  # writes land at any phase of the poll
            a.delete_item(f"bench{n}")
            deletes.append(_wait(lambda n=n: first_of_b("u0") != f"bench{n}"))
            time.sleep(rng.uniform(0, args.feed_poll))
    finally:
        _stop(servers, prefix)
    lines = [
        "# Replica convergence (two uvicorn replicas, one PostgreSQL store, one Redis)",
        "",
        "```",
        f"python benchmarks/replicas.py --writes {args.writes} --feed-poll {args.feed_poll}",
        "```",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores (shared with "
        "other work). Milliseconds from replica A acknowledging the write to replica B "
        f"answering accordingly, B polled every 10 ms; RECSYS_FEED_POLL_S={args.feed_poll}.",
        "",
        "| write on A | writes | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        _row("POST /items (B serves it)", upserts),
        _row("DELETE /items (B stops serving it)", deletes),
        "",
        f"Goal: within 2 s. Worst seen: {max(upserts + deletes):.2f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "replicas.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
