"""CROSSAN and its controls on MicroLens-50K: seed runs and the quality table (issue 9).

    python benchmarks/sequential.py run --models crossan,indsan,sasrec_text,sasrec \\
        --config configs/microlens_crossan.json --seeds 3 [--seed-from 2024] [--threads 1] \\
        [--out FILE] [--bundle-dir bundles/sequential]
    python benchmarks/sequential.py report [--baseline sasrec ...] [--runs FILE...]

``run`` trains every model with the configuration file's setting (the model swapped in, each
model keeping only the hyperparameters it takes; ``sasrec`` reads no content, so it skips the
title fields), early stopping on validation Recall@20 (= HR@20 under leave-one-out), and
records the validation and test reports (all rows, warm, cold: HR and NDCG at 10 and 20) and
every test user's hit at 10 (packed bits) and rank in its top 10 (packed bytes: its NDCG@10),
so the committed file alone gives ``report`` its paired per-user bootstrap intervals. A test
user's history includes its validation item, as in the trainer. Runs are merged into
``benchmarks/results/sequential/seeds-microlens.json`` (``--out`` gives runs in parallel their
own files); a later run of the same row and seed replaces the earlier one.
``report --runs FILE...`` merges them and writes ``benchmarks/results/crossan.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stats import (  # noqa: E402
    pack_hits,
    pack_ranks,
    paired_bootstrap,
    unpack_hits,
    unpack_ranks,
)
from models.registry import default_hparams  # noqa: E402
from training.config import TrainConfig, load_config_file, parse_hparams  # noqa: E402
from training.export import export_bundle  # noqa: E402
from training.pipeline import prepare_dataset, write_result_bundle  # noqa: E402
from training.report import per_user_ranks  # noqa: E402
from training.trainer import embeddings, train, users_after  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "sequential" / "seeds-microlens.json"
METRICS = ("hit@10", "ndcg@10", "hit@20", "ndcg@20")
PARTS = ("all", "warm", "cold")


def config_for(model: str, base: dict[str, Any], seed: int, hparams: dict[str, Any]) -> TrainConfig:
    takes = default_hparams(model)
    fields = {**base, "model": model, "seed": seed}
    fields["hparams"] = {k: v for k, v in {**base.get("hparams", {}), **hparams}.items()
                         if k in takes}
    if model == "sasrec":
        fields["feature_set"] = "dataset"  # IDs only: no title fields to encode
    return TrainConfig(**fields)


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config_file(args.config)
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.exists() else {"rows": {}, "commands": []}
    record["commands"].append(shlex.join(["python", *sys.argv]))
    hparams = parse_hparams(args.hparam or [])
    for model in args.models.split(","):
        row = model + args.label
        for seed in range(args.seed_from, args.seed_from + args.seeds):
            config = config_for(model, base, seed, hparams)
            dataset = prepare_dataset(args.data, config)
            result = train(dataset, config, progress=not args.quiet)
            users, items = embeddings(result.model)
            test_users = users_after(result.model, users, dataset.valid)  # as the trainer does
            hit10, ranks10 = {}, {}
            for part in PARTS:  # leave-one-out: a user's hit at 10 is its rank below 10
                ids, ranks = per_user_ranks(test_users, items, dataset, "test", 10, part)
                hit10[part] = {"users": int(ids.size), "users_sha256": _ids_digest(ids),
                               "bits": pack_hits(ranks < 10)}
                if part == "all":
                    ranks10 = {"users_sha256": _ids_digest(ids), "ranks": pack_ranks(ranks)}
            runs = [r for r in record["rows"].get(row, {}).get("runs", []) if r["seed"] != seed]
            runs.append({
                "seed": seed,
                "valid": {p: {m: result.valid_report[p][m] for m in METRICS}
                          for p in PARTS if p in result.valid_report},
                "test": {p: {m: result.test_report[p][m] for m in METRICS}
                         for p in PARTS if p in result.test_report},
                "rows": result.test_report["rows"],
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "seconds_per_epoch": result.seconds_per_epoch,
                "diagnostics": result.diagnostics,
                "hit10": hit10,
                "ranks10": ranks10,
            })
            record["rows"][row] = {
                "config": config.model_dump(exclude={"seed"}),
                "machine": f"{platform.node()}, {torch.get_num_threads()} torch threads",
                "runs": sorted(runs, key=lambda r: r["seed"]),
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record, indent=1))
            if args.bundle_dir:  # for benchmarks/text_tower.py and benchmarks/serving.py
                export_bundle(write_result_bundle(result, dataset, Path(args.bundle_dir)
                                                  / f"{row}-{seed}", overwrite=True))
            test = result.test_report["all"]
            print(f"{row} seed {seed}: test HR@10 {test['hit@10']:.4f} NDCG@10 "
                  f"{test['ndcg@10']:.4f}, best epoch {result.best_epoch}/"
                  f"{result.epochs_run}, {result.seconds_per_epoch:.0f} s/epoch", flush=True)


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.4f} ± {std:.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def _ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def _seed_mean(
    row: dict[str, Any], seeds: list[int], pick: Callable[[dict[str, Any]], dict | None],
    decode: Callable[[dict[str, Any]], np.ndarray],
) -> tuple[str, np.ndarray] | None:
    """``(users digest, per-user values averaged over the seeds)`` of the per-user record
    ``pick`` finds in each run (``decode`` unpacks it); None when a seed has none (runs made
    before that record was kept).

    The split is fixed, so every seed ranks the same users in the same order (checked by
    the digest of their ids).
    """
    found = [f for f in (pick(r) for r in row["runs"] if r["seed"] in seeds) if f is not None]
    if len(found) != len(seeds) or len({f["users_sha256"] for f in found}) != 1:
        return None
    return found[0]["users_sha256"], np.mean([decode(f) for f in found], axis=0)


def _hits(row: dict[str, Any], seeds: list[int], part: str) -> tuple[str, np.ndarray] | None:
    """Per-user HR@10 of one part, averaged over the seeds."""
    return _seed_mean(row, seeds, lambda r: r.get("hit10", {}).get(part),
                      lambda f: unpack_hits(f["bits"], f["users"]))


def _ndcg(row: dict[str, Any], seeds: list[int]) -> tuple[str, np.ndarray] | None:
    """Per-user NDCG@10 of all test rows from the stored ranks, averaged over the seeds."""

    def decode(record: dict[str, Any]) -> np.ndarray:
        ranks = unpack_ranks(record["ranks"])
        return np.where(ranks < 10, 1 / np.log2(ranks + 2), 0.0)

    return _seed_mean(row, seeds, lambda r: r.get("ranks10"), decode)


def _pairs(rows: dict[str, Any], baselines: list[str]) -> Iterator[tuple[str, str, list[int]]]:
    """``(row, baseline, shared seeds)`` for every row against each baseline, each pair once."""
    shown: set[tuple[str, str]] = set()
    for baseline in baselines:
        if baseline not in rows:
            continue
        for name, row in rows.items():
            if name == baseline or (baseline, name) in shown:
                continue
            shown.add((name, baseline))
            seeds = sorted({r["seed"] for r in row["runs"]}
                           & {r["seed"] for r in rows[baseline]["runs"]})
            if seeds:
                yield name, baseline, seeds


def _interval(mine: tuple[str, np.ndarray] | None,
              theirs: tuple[str, np.ndarray] | None) -> str | None:
    """The paired bootstrap of two per-user arrays over the same users, as table text."""
    if mine is None or theirs is None or mine[0] != theirs[0] or mine[1].size == 0:
        return None
    mean, low, high = paired_bootstrap(mine[1], theirs[1])
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def report(args: argparse.Namespace) -> str:
    record: dict[str, Any] = {"rows": {}, "commands": []}
    for path in map(Path, args.runs):  # later files win a row they share
        part = json.loads(path.read_text())
        record["rows"].update(part["rows"])
        record["commands"] += [c for c in part["commands"] if c not in record["commands"]]
    rows = record["rows"]
    lines = ["# CROSSAN and its controls on MicroLens-50K (test split; settings chosen on "
             "validation)", "", "Produced by", "", "```", *record["commands"],
             shlex.join(["python", *sys.argv]), "```", "",
             "Experts are two **fields** of the title (caption, hashtags) through one frozen "
             "MiniLM, not modalities. Leave-one-out, all-item ranking, history masked; mean ± "
             "std over seeds (one value: one seed). Cold: test targets without training "
             "interactions, ranked among all items.", "",
             "| model | seeds | HR@10 | NDCG@10 | HR@20 | NDCG@20 | HR@10 warm | HR@10 cold "
             "| best epoch | s/epoch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        runs = row["runs"]

        def values(part: str, metric: str, runs=runs) -> list[float]:
            return [r["test"][part][metric] for r in runs if part in r["test"]]

        lines.append(
            f"| {name} | {len(runs)} | " + " | ".join(_mean_std(values("all", m))
                                                     for m in METRICS)
            + f" | {_mean_std(values('warm', 'hit@10'))} | {_mean_std(values('cold', 'hit@10'))}"
            + f" | {', '.join(str(r['best_epoch']) for r in runs)}"
            + f" | {np.mean([r['seconds_per_epoch'] for r in runs]):.0f} |")
    cold_rows = next(iter(rows.values()))["runs"][0]["rows"]
    lines += ["", f"Test rows: {cold_rows['warm']} warm, {cold_rows['cold']} cold.", ""]
    lines += ["Paired per-user bootstrap of HR@10 (95%, seeds averaged per user), "
              f"against {', '.join(args.baseline)}:", "",
              "| model | baseline | seeds | part | difference [interval] |",
              "| --- | --- | --- | --- | --- |"]
    for name, baseline, seeds in _pairs(rows, args.baseline):
        for part in PARTS:
            cell = _interval(_hits(rows[name], seeds, part), _hits(rows[baseline], seeds, part))
            if cell:
                lines.append(f"| {name} | {baseline} | {len(seeds)} | {part} | {cell} |")
    lines += ["", "Paired per-user bootstrap of NDCG@10 (95%, all test rows, seeds averaged per "
              "user; only runs that kept their ranks):", "",
              "| model | baseline | seeds | difference [interval] |", "| --- | --- | --- | --- |"]
    for name, baseline, seeds in _pairs(rows, args.baseline):
        cell = _interval(_ndcg(rows[name], seeds), _ndcg(rows[baseline], seeds))
        if cell:
            lines.append(f"| {name} | {baseline} | {len(seeds)} | {cell} |")
    text = "\n".join(lines) + "\n"
    target = ROOT / "benchmarks" / "results" / "crossan.md"
    target.write_text(text)
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run")
    runner.add_argument("--models", default="crossan,indsan,sasrec_text,sasrec")
    runner.add_argument("--config", default=str(ROOT / "configs" / "microlens_crossan.json"))
    runner.add_argument("--data", default="microlens-50k")
    runner.add_argument("--seeds", type=int, default=3)
    runner.add_argument("--seed-from", type=int, default=2024)
    runner.add_argument("--threads", type=int, default=0)
    runner.add_argument("--hparam", action="append", help="key=value over the config's hparams")
    runner.add_argument("--label", default="", help="row-name suffix, e.g. '[fusion=concat]'")
    runner.add_argument("--quiet", action="store_true")
    runner.add_argument("--out", default=str(OUT))
    runner.add_argument("--bundle-dir", help="also write each run's bundle to DIR/<row>-<seed>")
    reporter = sub.add_parser("report")
    reporter.add_argument("--baseline", action="append", default=None)
    reporter.add_argument("--runs", nargs="+", default=[str(OUT)],
                          help="seeds files of `run` (one per parallel run)")
    args = parser.parse_args()
    if args.command == "report":
        args.baseline = args.baseline or ["sasrec", "sasrec_text", "indsan", "crossan"]
        report(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
