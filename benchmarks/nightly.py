"""The nightly job's wall time: retrain + gate + publish on a real dataset, warm and cold start.

    python benchmarks/nightly.py [--data tiktok] [--config configs/tiktok_serving.json]
                                 [--events 5000] [--threads 2]

1. Bootstraps a live bundle with the configuration (not timed as the nightly job: it runs once).
2. Logs a day of traffic into a fresh SQLite store, as the service would: ``--events``
   interactions of known users taken from the base test split (real next interactions; the
   gate scores on the validation split and the recent holdout, never on test), and 20 new
   items (each a known item's features plus noise) with every 50th event. (Random events
   drawn by popularity instead made every candidate worse than live on validation, -11%, and
   the gate rejected them all: noise is no day of traffic.)
3. Runs :func:`training.retrain.retrain` twice on the same store, from scratch and warm-started
   from the live bundle, and times each from the first read to the published ``current``.

Writes ``benchmarks/results/nightly.md``. The goal (issue 8): under 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle import versions  # noqa: E402
from eventlog.store import Store, StoredItem  # noqa: E402
from training.config import TrainConfig, load_config_file  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.pipeline import train_to_bundle  # noqa: E402
from training.retrain import retrain  # noqa: E402

NEW_ITEMS = 20


def log_a_day(url: str, data: str, events: int, version: str, seed: int) -> None:
    base = load_dataset(data, seed=seed)
    rng = np.random.default_rng(seed)
    user_ids, item_ids = base.external_user_ids(), base.external_item_ids()
    store = Store(url)
    store.create()
    features = np.concatenate([m for m in base.features.values()], axis=1)
    layout = ",".join(f"{n}:{d}" for n, d in zip(base.modality_names, base.modality_dims,
                                                 strict=True))
    new_items = [f"new-{k}" for k in range(NEW_ITEMS)]
    copies = rng.choice(base.num_items, NEW_ITEMS, replace=False)
    noisy = features[copies] + rng.normal(0, 0.01, (NEW_ITEMS, features.shape[1]))
    store.upsert_items([StoredItem(i, f.astype(np.float32), layout, None, None, version)
                        for i, f in zip(new_items, noisy, strict=True)])
    # real behaviour: what the users did next (the base test split), in a random order; every
    # 50th event goes to a new item instead
    rows = base.test[rng.permutation(len(base.test))[:events]]
    for k, (user, item) in enumerate(rows):
        item_id = new_items[k % NEW_ITEMS] if k % 50 == 0 else item_ids[item]
        store.add_interaction(user_ids[user], item_id, float(k))
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="tiktok")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiktok_serving.json")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig(**load_config_file(args.config))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, url = Path(tmp) / "bundles", f"sqlite:///{Path(tmp) / 'store.db'}"
        started = time.perf_counter()
        _, path = train_to_bundle(args.data, root / "candidates" / "bootstrap", config,
                                  overwrite=True)
        live = versions.publish(path, root)
        bootstrap_s = time.perf_counter() - started
        log_a_day(url, args.data, args.events, live, args.seed)
        for warm in (False, True):
            versions.point_current(root, live)  # both runs gate against the same live bundle
            started = time.perf_counter()
            decision = retrain(root, args.data, config, url, warm_start=warm, tolerance=0.02)
            total = time.perf_counter() - started
            rows.append({"start": "warm" if warm else "cold", "total_s": total,
                         "decision": decision})
            print(json.dumps({"start": rows[-1]["start"], "total_s": round(total, 1),
                              **{k: decision[k] for k in ("accepted", "train_seconds",
                                                          "epochs")}}), flush=True)

    lines = [
        f"# Nightly retrain + gate + publish on {args.data}",
        "",
        "```",
        f"python benchmarks/nightly.py --data {args.data} --config "
        f"{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config} "
        f"--events {args.events} --threads {args.threads}",
        "```",
        "",
        f"{config.model}, {args.threads} torch threads, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}); a day of {args.events} logged "
        f"interactions (from the test split) and {NEW_ITEMS} new items in SQLite. Bootstrap "
        f"(not part of the nightly job): {bootstrap_s:.0f} s. *total*: from reading the store "
        "to the published `current`; *train*: training, calibration, export and gate; *rest*: "
        "reading the data and the store, publish. *day*: the gate's traffic checks on the "
        "logged events (distinct users, share repeating a known pair, the holdout's best "
        "predictor in multiples of a random list; `training/gate.py`).",
        "",
        "| start | total s | train s | rest s | epochs run (best) | valid R@20 cand / live "
        "| holdout R@20 cand / live (rows) | day: users / repeats / signal | accepted |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        d = row["decision"]
        hold, traffic = d["holdout"], d["traffic"]
        holdout = (f"{hold['candidate']:.4f} / {hold['live']:.4f} ({hold['rows']})"
                   if hold["rows"] else "-")
        start = row["start"]
        if start == "warm" and not d["warm_start"]:
            start = "warm asked: from scratch (live is a refit)"
        lines.append(
            f"| {start} | {row['total_s']:.0f} | {d['train_seconds']:.0f} | "
            f"{row['total_s'] - d['train_seconds']:.0f} | {d['epochs']['run']} "
            f"({d['epochs']['best']}) | {d['valid']['candidate']:.4f} / {d['valid']['live']:.4f}"
            f" | {holdout} | {traffic['users']} / {traffic['repeat_share']:.1%} / "
            f"{traffic['signal']}x | {d['accepted']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "nightly.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
