"""Retrains and publishes under races and kills: one retrain at a time, no leftovers, rollback to
what was live.

python benchmarks/publish_races.py --races 20 --kills 10 --sequences 10 \
    --database-url postgresql://postgres@127.0.0.1:5432/test

On a small synthetic catalogue (``benchmarks/synthetic_catalogue.py``, 600 users, 400 items),
with real ``python -m training`` processes:

1. **Races**: ``retrain`` by hand and ``schedule --once`` started together, ``--races`` times.
   Each run's start and end come from ``<root>/runs.jsonl``; two runs overlap when one starts
   before the other ends. The loser of a race exits 3 (the lock) and does nothing.
2. **Kills**: a retrain killed with SIGKILL (every other one as soon as it starts writing its
   candidate, the others at a random moment of a run), then a full retrain;
   what is left of earlier runs after it (candidate folders but the last rejected one, staging
   folders, temporary links) counts as leftovers.
3. **Rollback sequences**: publish, rollback, publish, a publish killed at a random moment,
   rollback. After each step the live version is read from ``current``; every rollback must
   land on the version that was live before the current one.

Writes ``benchmarks/results/publish_races.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_catalogue import write_synthetic_catalogue  # noqa: E402
from bundle import versions  # noqa: E402
from eventlog import Store  # noqa: E402

CONFIG = {"model": "lightgcn", "max_epochs": 3, "patience": 3, "lr": 0.005}


def training(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PREFIX = "races_"  # the bench's own tables in a shared database


def log_events(url: str, users: int, items: int, count: int, seed: int) -> None:
    """A day that passes as traffic: a few popular items, many users."""
    rng = np.random.default_rng(seed)
    store = Store(url, PREFIX)
    store.create()
    for user, item in zip(rng.integers(0, users, count), rng.zipf(1.5, count) % items,
                          strict=True):
        store.add_interaction(str(user), str(item))
    store.close()


def runs_overlap(root: Path) -> tuple[int, int]:
    """(pairs of runs that overlapped in time, runs that ran)."""
    path = root / "runs.jsonl"
    runs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    runs = [r for r in runs if r["command"] == "retrain"]
    spans = sorted((r["started"], r["finished"]) for r in runs)
    overlaps = sum(1 for (_, end), (start, _) in zip(spans, spans[1:], strict=False)
                   if start < end)
    return overlaps, len(runs)


def leftovers(root: Path, keep: str | None) -> list[str]:
    """What earlier runs left: candidate folders but ``keep``, staging folders, temp links."""
    found = [p.name for p in (root / "candidates").glob("*") if p.name != keep]
    found += [p.name for p in (root / "versions").glob(".staging-*")]
    found += [p.name for p in root.glob(".current-*")]
    found += [p.name for p in root.glob(".candidate.staging-*")]
    return found


def last_candidate(root: Path) -> str | None:
    try:
        decision = json.loads((root / "gate" / "gate.json").read_text())
    except OSError:
        return None
    return None if decision["published"] else Path(decision["candidate"]).name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--races", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--sequences", type=int, default=10)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_synthetic_catalogue(tmp / "synthetic", num_users=600, num_items=400,
                                         interactions=6000, topics=20)
        config = tmp / "config.json"
        config.write_text(json.dumps(CONFIG))
        root = tmp / "bundles"
        url = args.database_url or f"sqlite:///{tmp / 'store.db'}"
        if url.startswith("postgres"):
            Store(url, PREFIX).drop()  # a clean store
        env = {**os.environ, "RECSYS_BUNDLES_ROOT": str(root), "RECSYS_DATA": str(data),
               "RECSYS_TRAIN_CONFIG": str(config), "RECSYS_DATABASE_URL": url,
               "RECSYS_METRICS_PORT": "0", "RECSYS_RETRAIN_ARGS": "--tolerance 1.0",
               "RECSYS_TABLE_PREFIX": PREFIX}
        assert training("bootstrap", "--quiet", env=env).wait() == 0
        log_events(url, 600, 400, 2000, args.seed)
        hand = ["retrain", "--quiet", "--tolerance", "1.0"]

        # 1. races
        started = time.perf_counter()
        codes: dict[str, int] = {}
        for _ in range(args.races):
            pair = [training(*hand, env=env), training("schedule", "--once", env=env)]
            for code in (p.wait() for p in pair):
                codes[str(code)] = codes.get(str(code), 0) + 1
        overlaps, ran = runs_overlap(root)
        races_s = time.perf_counter() - started
        print(f"races: {ran} runs, {overlaps} overlaps, exit codes {codes}", flush=True)

        # 2. kills
        left_after, left_by_kill = [], 0
        started = time.perf_counter()
        training(*hand, env=env).wait()
        whole = time.perf_counter() - started  # one full run, for the kill times
        for kill in range(args.kills):
            before = set((root / "candidates").glob("*"))
            victim = training(*hand, env=env)
            if kill % 2:  # at a random moment of a run
                time.sleep(rng.uniform(0.3, 1.0) * whole)
            else:  # as soon as the run starts writing its candidate
                while victim.poll() is None and set((root / "candidates").glob("*")) <= before:
                    time.sleep(0.01)
            victim.kill()
            victim.wait()
            left_by_kill += bool(leftovers(root, last_candidate(root)))  # the kill's mess
            training(*hand, env=env).wait()
            left_after.append(leftovers(root, last_candidate(root)))
        print(f"kills: leftovers after the next run {left_after}", flush=True)

        # 3. rollback sequences
        source = tmp / "source"
        shutil.copytree(versions.current_path(root), source)
        landed, total = 0, 0
        failures = []
        for _ in range(args.sequences):
            live = [versions.current_version(root)]  # what was live, in order

            def publish(kill: bool = False, live: list = live) -> None:
                process = training("publish", "--bundle", str(source), env=env)
                if kill:
                    time.sleep(rng.uniform(0.5, 3.0))
                    process.kill()
                process.wait()
                now = versions.current_version(root)
                if now != live[-1]:
                    live.append(now)

            def rollback(live: list = live) -> None:
                nonlocal landed, total
                expected = live[-2]
                assert training("rollback", env=env).wait() == 0
                now = versions.current_version(root)
                total += 1
                landed += now == expected
                if now != expected:
                    failures.append((expected, now))
                live.pop()

            publish()
            rollback()
            publish()
            publish(kill=True)
            rollback()
        print(f"rollbacks: {landed} of {total} on the version live before", flush=True)

    lines = [
        "# Retrains and publishes under races and kills",
        "",
        "```",
        f"python benchmarks/publish_races.py --races {args.races} --kills {args.kills} "
        f"--sequences {args.sequences}"
        + (f" --database-url {args.database_url}" if args.database_url else ""),
        "```",
        "",
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), store "
        f"{'PostgreSQL (advisory lock)' if url.startswith('postgres') else 'SQLite (file lock)'}"
        "; a synthetic catalogue of 600 users and 400 items, LightGCN for 3 epochs, real "
        "`python -m training` processes. See the script's docstring for what each row counts.",
        "",
        "| check | runs | result | goal |",
        "| --- | --- | --- | --- |",
        f"| hand `retrain` and `schedule --once` started together | {args.races} races, "
        f"{ran} runs in {races_s:.0f} s | {overlaps} overlapping runs; exit codes "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))} | 0 overlaps |",
        f"| SIGKILL during a retrain, then a full retrain | {args.kills} kills, "
        f"{left_by_kill} of them leaving a partial candidate | "
        f"{sum(map(len, left_after))} leftovers after the next run | 0 |",
        f"| publish, rollback, publish, killed publish, rollback | {args.sequences} sequences |"
        f" {landed} of {total} rollbacks on the version live before"
        + (f" (wrong: {failures})" if failures else "") + f" | {total} of {total} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "publish_races.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
