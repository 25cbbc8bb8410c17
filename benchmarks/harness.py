"""What the benchmark scripts share: where results go, the fields every run of a command
shares, one training run, and the keys of the per-user arrays."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import TrainConfig, apply_settings  # noqa: E402
from training.data import Dataset  # noqa: E402
from training.trainer import TrainResult, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OPTUNA_DIR = RESULTS / "optuna"
TRAIN_FIELDS = ("lr", "l2", "l2_scope")
DATA_FIELDS = ("feature_set", "state_layers", "state_pooling")  # what prepare_dataset reads
SEEDS_FROM = 2024
METRICS = ("recall@20", "ndcg@20")
PARTS = ("all", "warm", "cold", "cold_among_cold")
SHARE = "cold_share@20"
CONTENT_REFERENCE = "content_knn"
SERVED = "served"  # per-user arrays of all rows under the as-served protocol


def setting_of(params: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields of a flat parameter dict (the rest go to ``hparams``)."""
    setting: dict[str, Any] = {k: params[k] for k in TRAIN_FIELDS if k in params}
    setting["hparams"] = {k: v for k, v in params.items() if k not in TRAIN_FIELDS}
    return setting


def data_tag(data: str) -> str:
    """File-name tag of a dataset name or folder ('tiktok', '/x/toy' -> 'toy')."""
    return Path(str(data)).name


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/tune.py", *argv])


def fixed_fields(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields every run of a command shares (flags left out keep the defaults)."""
    fields = {
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "cold_start_fraction": args.cold_start_fraction,
        "epoch_valid_users": args.epoch_valid_users,
        "device": args.device,
        "report_curves": False if args.no_report_curves else None,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    # --set field=value: any other TrainConfig field, with no flag of its own here
    return apply_settings(fields, args.set or [])


def fit(
    dataset: Dataset, model: str, setting: dict[str, Any], **fields: Any
) -> tuple[TrainResult, dict[str, Any] | None]:
    """Train with early stopping (the trainer calibrates the new-item scale on validation)."""
    config = TrainConfig(model=model, **setting, **fields)
    result = train(dataset, config, progress=False)
    return result, result.calibration


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def array_key(model: str, seed: int, part: str, what: str) -> str:
    return f"{model}__{seed}__{part}__{what}"
