"""Multi-seed runs of chosen settings: ``python benchmarks/tune.py seeds`` (see its help).

Each model's best tuned setting (its defaults when never tuned), or the setting a ``--settings``
file gives, trained with seeds 2024, 2025, ...; headline metrics, calibration curves ->
``benchmarks/results/optuna/seeds-<data>.json``, per-user test Recall@20 -> the ``.npz`` beside it
(entries of other models are kept)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (  # noqa: E402
    DATA_FIELDS,
    METRICS,
    OPTUNA_DIR,
    PARTS,
    SERVED,
    SHARE,
    array_key,
    command_line,
    data_tag,
    fit,
    fixed_fields,
    write_json,
)
from training.config import TrainConfig, parse_hparams  # noqa: E402
from training.data import Dataset  # noqa: E402
from training.pipeline import prepare_dataset  # noqa: E402
from training.report import PER_USER_PARTS, headline, per_user_hits  # noqa: E402
from training.trainer import embeddings, users_after  # noqa: E402


def best_setting(tuned_dir: Path, tag: str, model: str) -> tuple[dict[str, Any], str | None]:
    """The tuned best setting of ``model`` and its file, or the defaults and None."""
    path = tuned_dir / f"{tag}-{model}.json"
    if path.exists():
        best = json.loads(path.read_text()).get("best")
        if best:
            return best["setting"], str(path)
    return {"hparams": {}}, None


def _both_metrics(report: dict[str, Any]) -> dict[str, Any]:
    return {
        **{metric: {p: headline(report, metric)[p] for p in PARTS} for metric in METRICS},
        SHARE: report[SHARE],
        "rows": report["rows"],
    }


def _calibration_record(calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    if calibration is None:
        return None
    curve = [
        {"scale": c["scale"], "valid_all": c["valid"]["all"], "test": c["test"]}
        for c in calibration.get("curve", [])
    ]
    slot_curve = [
        {"slot_share": c["slot_share"], "valid": c["valid"], "test": c["test"]}
        for c in calibration.get("slot_curve", [])
    ]
    fused = [
        {"fused_weight": c["fused_weight"], "valid": c["valid"], "test": c["test"]}
        for c in calibration.get("fused_weight_curve", [])
    ]
    return {"chosen": calibration["chosen"], "curve": curve, "slot_curve": slot_curve,
            "fused_weight_curve": fused}


def seeds(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Every model at its chosen setting over several seeds; merged into an existing file."""
    if args.threads:
        torch.set_num_threads(args.threads)
    tag = data_tag(args.data)
    out = Path(args.out or OPTUNA_DIR / f"seeds-{tag}.json")
    arrays_path = out.with_suffix(".npz")
    record: dict[str, Any] = (
        json.loads(out.read_text()) if out.exists() else {"data": args.data, "models": {}}
    )
    arrays: dict[str, np.ndarray] = dict(np.load(arrays_path)) if arrays_path.exists() else {}
    record.setdefault("commands", [])
    if command_line(argv) not in record["commands"]:
        record["commands"].append(command_line(argv))
    fields = fixed_fields(args)
    if args.cold_start_folds and not args.cold_start_fraction:
        raise SystemExit("--cold-start-folds needs --cold-start-fraction")
    seed_list = [args.seed_from + i for i in range(args.cold_start_folds or args.seeds)]
    datasets: dict[tuple[int, str], Dataset] = {}
    chosen = json.loads(Path(args.settings).read_text()) if args.settings else {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        setting, tuned = best_setting(Path(args.tuned_dir), tag, model)
        if model in chosen:  # a setting chosen on validation outside an Optuna study
            setting, tuned = {"hparams": {}, **chosen[model]}, args.settings
        key = model + args.label  # the row name: an ablation of a model gets its own row
        if args.hparam:
            setting = {**setting, "hparams": {**setting["hparams"], **parse_hparams(args.hparam)}}
        arrays = {k: v for k, v in arrays.items() if not k.startswith(f"{key}__")}
        runs = []
        for run, seed in enumerate(seed_list):
            # --cold-start-folds: run i holds out fold i (disjoint items, results pooled)
            run_fields = {**fields, "cold_start_fold": run} if args.cold_start_folds else fields
            # the split follows the seed, the item features the setting's feature set
            config = TrainConfig(model=model, seed=seed, **run_fields,
                                 **{k: setting[k] for k in DATA_FIELDS if k in setting})
            data_key = (seed, json.dumps([getattr(config, k) for k in DATA_FIELDS]))
            if data_key not in datasets:
                datasets[data_key] = prepare_dataset(args.data, config)
            dataset = datasets[data_key]
            result, calibration = fit(dataset, model, setting, seed=seed, **run_fields)
            users, items = embeddings(result.model)
            served_users = users_after(result.model, users, dataset.valid)
            for part in PER_USER_PARTS:
                ids, recall = per_user_hits(users, items, dataset, "test", 20, part,
                                            slot_share=result.slot_share)
                arrays[array_key(key, seed, part, "users")] = ids
                arrays[array_key(key, seed, part, "recall")] = recall
            # as served: every user embedded after its validation item too
            ids, recall = per_user_hits(served_users, items, dataset, "test", 20, "all",
                                        slot_share=result.slot_share)
            arrays[array_key(key, seed, SERVED, "users")] = ids
            arrays[array_key(key, seed, SERVED, "recall")] = recall
            runs.append({
                "seed": seed,
                "valid": _both_metrics(result.valid_report),
                "test": _both_metrics(result.test_report),
                "test_served": _both_metrics(result.served_test_report),
                "slot_share": result.slot_share,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "seconds_per_epoch": result.seconds_per_epoch,
                "calibration": _calibration_record(calibration),
                "knn_scale": result.knn_calibration,
            })
            print(
                f"{key} seed {seed}: test R@20 {result.test_metrics['recall@20']:.4f}, "
                f"epoch {result.best_epoch}, {result.seconds_per_epoch:.2f} s/epoch",
                flush=True,
            )
        record["models"][key] = {
            "setting": setting,
            "tuned": tuned,
            "fixed": fields,
            "machine": f"{platform.node()}, {torch.get_num_threads()} torch threads",
            "runs": runs,
        }
        write_json(out, record)  # after every model, so a long run keeps what it finished
        np.savez_compressed(arrays_path, **arrays)
    return record
