"""Choose the served model on validation: ``python -m training select``.

A candidates file names the configurations to compare, each a :class:`TrainConfig` setting
and optionally a search space over some of its fields::

    {"trials": 4, "seeds": 2,
     "candidates": {
        "lightgcn": {"config": {"model": "lightgcn", "lr": 0.005}},
        "early_lightgcn+graph": {"config": {"model": "early_lightgcn", ...},
                                 "search": {"item_graph_k": ["categorical", [0, 10, 20]],
                                            "lr": ["log", 0.002, 0.01]}}}}

Each candidate gets the same fixed budget: an Optuna TPE study (seeded) of ``trials`` runs,
the given setting as trial 0 (so the search can only improve on it), each run trained with
early stopping and its serving rules chosen on validation (:mod:`training.calibration`),
scored by validation Recall@20 on lists as served. The best trial is trained again with
``seeds - 1`` more seeds; the candidate with the best mean validation Recall@20 wins. Test
numbers are recorded beside (reported, never used to choose).

The winner's served configuration is its setting plus a :class:`RefitConfig`: trained again on
training + validation for its median best epoch, with the kNN factor, new-item scale and
reserved share its first seed chose. It is written as a config file (what ``run.sh`` trains),
the comparison as a markdown table and a JSON record, and the refit bundle is trained and
written (or published under a bundles root).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from models.registry import default_hparams
from training.config import TrainConfig
from training.data import Dataset
from training.evaluation import SELECTION_METRIC
from training.pipeline import prepare_dataset
from training.trainer import TrainResult, train

log = logging.getLogger(__name__)

#: Spec kinds of a search space: ("log", low, high), ("float", low, high), ("int", low, high)
#: or ("categorical", [choices]).
SPEC_KINDS = ("log", "float", "int", "categorical")
OBJECTIVE = SELECTION_METRIC


def suggest(trial: optuna.Trial, name: str, spec: Any) -> Any:
    """Optuna's suggestion for one spec (see :data:`SPEC_KINDS`)."""
    kind = spec[0]
    if kind == "log":
        return trial.suggest_float(name, spec[1], spec[2], log=True)
    if kind == "float":
        return trial.suggest_float(name, spec[1], spec[2])
    if kind == "int":
        return trial.suggest_int(name, spec[1], spec[2])
    if kind == "categorical":
        return trial.suggest_categorical(name, list(spec[1]))
    raise ValueError(f"unknown search-space kind {kind!r} for {name} (one of {SPEC_KINDS})")


def with_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``base`` (TrainConfig fields) with ``params`` over it: a TrainConfig field by name, any
    other name a model hyperparameter."""
    fields = set(TrainConfig.model_fields)
    setting = {**base, "hparams": dict(base.get("hparams", {}))}
    for name, value in params.items():
        if name in fields:
            setting[name] = value
        else:
            setting["hparams"][name] = value
    return setting


def _first_values(base: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """Trial 0: the base setting's values of the searched names (the TrainConfig and model
    defaults for the ones it leaves out)."""
    config = TrainConfig(**base)
    flat = {**config.model_dump(), **default_hparams(config.model), **config.hparams}
    return {name: flat[name] for name in space if name in flat}


@dataclass
class RunSummary:
    """What a selection keeps of one training run."""

    seed: int
    setting: dict[str, Any]
    valid: float
    test: float
    test_served: float | None
    warm: float | None
    cold: float | None
    best_epoch: int
    seconds_per_epoch: float
    knn_scale: float | None
    cold_scale: float | None
    slot_share: float

    @classmethod
    def of(cls, result: TrainResult, setting: dict[str, Any]) -> RunSummary:
        part = result.test_report
        return cls(
            seed=result.config.seed, setting=setting,
            valid=float(result.valid_metrics[OBJECTIVE]),
            test=float(result.test_metrics[OBJECTIVE]),
            test_served=(result.served_test_report.get("all") or {}).get(OBJECTIVE),
            warm=(part.get("warm") or {}).get(OBJECTIVE),
            cold=(part.get("cold") or {}).get(OBJECTIVE),
            best_epoch=result.best_epoch, seconds_per_epoch=result.seconds_per_epoch,
            knn_scale=(result.knn_calibration or {}).get("chosen"),
            cold_scale=(result.calibration or {}).get("chosen"), slot_share=result.slot_share)


@dataclass
class CandidateResult:
    name: str
    trials: list[RunSummary] = field(default_factory=list)
    seeds: list[RunSummary] = field(default_factory=list)

    @property
    def best(self) -> RunSummary:
        return max(self.trials, key=lambda run: run.valid)  # the first of ties

    @property
    def valid_mean(self) -> float:
        return statistics.fmean(run.valid for run in self.seeds)


Runner = Callable[[Dataset, dict[str, Any], int], TrainResult]


def _train_run(dataset: Dataset, setting: dict[str, Any], seed: int) -> TrainResult:
    return train(dataset, TrainConfig(**{**setting, "seed": seed}), progress=False)


def search_candidate(name: str, entry: dict[str, Any], datasets: Callable[[TrainConfig], Dataset],
                     *, trials: int, seeds: int, seed: int, runner: Runner = _train_run
                     ) -> CandidateResult:
    """One candidate's study (``trials`` runs), then its best setting over ``seeds`` seeds."""
    base, space = dict(entry["config"]), dict(entry.get("search", {}))
    out = CandidateResult(name)

    def run(setting: dict[str, Any], run_seed: int) -> RunSummary:
        config = TrainConfig(**{**setting, "seed": run_seed})
        summary = RunSummary.of(runner(datasets(config), setting, run_seed), setting)
        log.info("%s seed %d: valid %s %.4f, test %.4f, best epoch %d", name, run_seed,
                 OBJECTIVE, summary.valid, summary.test, summary.best_epoch)
        return summary

    if space and trials > 1:
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=0))
        study.enqueue_trial(_first_values(base, space))

        def objective(trial: optuna.Trial) -> float:
            params = {key: suggest(trial, key, spec) for key, spec in space.items()}
            summary = run(with_params(base, params), seed)
            out.trials.append(summary)
            return summary.valid

        study.optimize(objective, n_trials=trials, catch=(ValueError,))
    if not out.trials:  # nothing searched (or every trial failed): the setting as given
        out.trials.append(run(base, seed))
    best = out.best
    out.seeds = [best] + [run(best.setting, seed + k) for k in range(1, seeds)]
    return out


def served_config(winner: CandidateResult) -> dict[str, Any]:
    """The winner's setting with the refit that serves it (module docstring)."""
    first = winner.seeds[0]
    setting = {key: value for key, value in first.setting.items()
               if key not in ("choose_new_item_slots", "refit")}
    setting["new_item_slots"] = first.slot_share
    refit: dict[str, Any] = {
        "epochs": int(statistics.median_low(run.best_epoch for run in winner.seeds)) or 1}
    if first.knn_scale is not None:
        refit["knn_scale"] = first.knn_scale
    if first.cold_scale is not None:
        refit["cold_scale"] = first.cold_scale
    setting["refit"] = refit
    TrainConfig(**setting)  # it must load
    return setting


def _mean_std(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return f"{statistics.fmean(present):.4f} ± {std:.4f}"


def comparison_table(results: list[CandidateResult], winner: str) -> list[str]:
    lines = ["| candidate | trials | seeds | valid R@20 | test R@20 (today) | test R@20 as served "
             "| test warm | test cold | best epoch | s/epoch | chosen setting |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in sorted(results, key=lambda r: -r.valid_mean):
        runs = result.seeds
        mark = " **(chosen)**" if result.name == winner else ""
        lines.append("| " + " | ".join([
            result.name + mark, str(len(result.trials)), str(len(runs)),
            _mean_std([r.valid for r in runs]), _mean_std([r.test for r in runs]),
            _mean_std([r.test_served for r in runs]), _mean_std([r.warm for r in runs]),
            _mean_std([r.cold for r in runs]),
            f"{np.mean([r.best_epoch for r in runs]):.0f}",
            f"{np.mean([r.seconds_per_epoch for r in runs]):.2f}",
            "`" + json.dumps(runs[0].setting, sort_keys=True) + "`",
        ]) + " |")
    return lines


def select(
    data: str,
    candidates: dict[str, Any],
    *,
    trials: int | None = None,
    seeds: int | None = None,
    seed: int = 2024,
    runner: Runner = _train_run,
) -> dict[str, Any]:
    """Run every candidate's study and seeds; returns the record (module docstring)."""
    trials = int(trials if trials is not None else candidates.get("trials", 1))
    seeds = int(seeds if seeds is not None else candidates.get("seeds", 1))
    if trials < 1 or seeds < 1:
        raise ValueError(f"trials and seeds must be >= 1, got {trials}, {seeds}")
    entries = candidates.get("candidates") or {}
    if not entries:
        raise ValueError("the candidates file names no candidates")
    for name, entry in entries.items():
        if "config" not in entry:
            raise ValueError(f"candidate {name!r} has no 'config'")
        TrainConfig(**entry["config"])  # fail before training anything
        for key, spec in entry.get("search", {}).items():
            if not isinstance(spec, list | tuple) or spec[0] not in SPEC_KINDS:
                raise ValueError(f"candidate {name!r}: search spec of {key!r} must be "
                                 f"[kind, ...] with kind one of {SPEC_KINDS}, got {spec!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache: dict[str, Dataset] = {}

    def datasets(config: TrainConfig) -> Dataset:
        key = json.dumps([config.feature_set, config.state_layers, config.state_pooling,
                          config.cold_start_fraction, config.cold_start_fold])
        if key not in cache:
            cache[key] = prepare_dataset(data, config)
        return cache[key]

    started = time.time()
    results = [search_candidate(name, entry, datasets, trials=trials, seeds=seeds, seed=seed,
                                runner=runner)
               for name, entry in entries.items()]
    winner = max(results, key=lambda r: r.valid_mean)  # the first of ties
    return {
        "data": data,
        "objective": f"valid {OBJECTIVE} (lists as served), mean over seeds",
        "budget": {"trials": trials, "seeds": seeds, "first_seed": seed},
        "winner": winner.name,
        "served_config": served_config(winner),
        "seconds": round(time.time() - started, 1),
        "candidates": {r.name: {"trials": [vars(t) for t in r.trials],
                                "seeds": [vars(s) for s in r.seeds]} for r in results},
        "table": comparison_table(results, winner.name),
    }


def write_selection(record: dict[str, Any], table: Path, config_out: Path | None,
                    command: str) -> None:
    """The markdown table (and its JSON record beside it) and the served config file."""
    table.parent.mkdir(parents=True, exist_ok=True)
    budget = record["budget"]
    text = "\n".join([
        f"# Served model chosen on validation: {record['data']}",
        "",
        "```",
        command,
        "```",
        "",
        f"Written {time.strftime('%Y-%m-%d')}. Objective: {record['objective']}; budget per "
        f"candidate: an Optuna TPE study of {budget['trials']} trials (the given setting is "
        f"trial 0), then the best trial over {budget['seeds']} seeds from {budget['first_seed']}"
        f". Test columns are reported, never used to choose; *today* scores a test user by its "
        f"training vector, *as served* by its vector after every interaction before the test "
        f"one. Took {record['seconds'] / 60:.0f} minutes.",
        "",
        *record["table"],
        "",
        f"Chosen: **{record['winner']}**, served as (trained again on training + validation):",
        "",
        "```json",
        json.dumps(record["served_config"], indent=1),
        "```",
        "",
    ])
    table.write_text(text)
    table.with_suffix(".json").write_text(json.dumps(record, indent=1))
    if config_out is not None:
        config_out.parent.mkdir(parents=True, exist_ok=True)
        config_out.write_text(json.dumps(record["served_config"], indent=1) + "\n")
