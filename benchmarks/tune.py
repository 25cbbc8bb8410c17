"""Tuning by Optuna, multi-seed runs and a report with paired intervals, for one dataset.

python benchmarks/tune.py tune --data tiktok --model metammf_lightgcn --trials 40
    TPE search (seeded) of SEARCH_SPACES on validation Recall@20, after early stopping and,
    for models with a new-item path, the validation-chosen new-item scale; every trial and
    the best setting -> benchmarks/results/optuna/<data>-<model>.json (rewritten per trial);
    with --storage benchmarks/results/optuna/<data>-<model>.db a stopped study resumes;
    --settings configs/x.json fixes what is not searched (e.g. the served new-item slots) and
    makes that hand-chosen setting trial 0.
python benchmarks/tune.py seeds --data tiktok --models lightgcn,metammf_lightgcn --seeds 3
    each model's best tuned setting (its defaults when never tuned) trained with seeds 2024,
    2025, ...; headline metrics, calibration curves -> benchmarks/results/optuna/seeds-<data>.json,
    per-user test Recall@20 -> the .npz beside it (entries of other models are kept).
python benchmarks/tune.py report --data tiktok --baseline lightgcn
    mean ± std over seeds, paired bootstrap intervals against the baseline and content kNN,
    the new-item trade-off curve -> benchmarks/results/quality_<data>.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stats import paired_bootstrap  # noqa: E402
from models.registry import MODEL_NAMES, default_hparams  # noqa: E402
from training.config import TrainConfig, parse_hparams  # noqa: E402
from training.data import Dataset  # noqa: E402
from training.pipeline import prepare_dataset  # noqa: E402
from training.report import PER_USER_PARTS, headline, per_user_hits  # noqa: E402
from training.select import suggest  # noqa: E402
from training.trainer import TrainResult, embeddings, train, users_after  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OPTUNA_DIR = RESULTS / "optuna"

# A spec is ("log", low, high), ("float", low, high) or ("categorical", [choices]). Keys that
# are TrainConfig fields (lr, l2, l2_scope) set the config; the rest are model hyperparameters,
# and a key a model does not take (see models.registry) is left out of its search.
_COMMON: dict[str, tuple[Any, ...]] = {
    "lr": ("log", 1e-3, 2e-2),
    "l2": ("log", 1e-7, 1e-3),
    "l2_scope": ("categorical", ["batch", "all"]),
}
SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "id": {"models": ["lightgcn", "bpr", "vbpr"], "space": _COMMON},
    "gcn_fusion": {
        "models": ["metammf_gcn", "metammf_mf", "early_gcn", "late_gcn", "hybrid_gcn"],
        "space": {
            **_COMMON,
            "num_layers": ("categorical", [1, 2]),
            "standardize": ("categorical", [False, True]),
        },
    },
    "lightgcn_fusion": {
        "models": ["metammf_lightgcn", "early_lightgcn", "late_lightgcn", "hybrid_lightgcn"],
        "space": {
            **_COMMON,
            "embed_dim": ("categorical", [64, 96, 128]),
            # combine=propagate is no longer searched: it lost on validation and takes
            # neither the kNN part nor the item graph
            "conditioning": ("categorical", ["none", "center_l2", "whiten"]),
            "new_item_weight": ("float", 0.0, 1.0),
            "new_item_dropout": ("float", 0.0, 0.3),
            # FREEDOM's frozen content graph beside the propagation (issue 20)
            "item_graph_k": ("categorical", [0, 5, 10, 20, 40]),
            "item_graph_source": ("categorical", ["features", "fused"]),
            "edge_dropout": ("categorical", [0.0, 0.1, 0.3]),
        },
    },
    # MMRec's searched hyperparameters (src/configs/model/*.yaml): reg_weight over
    # {0, 1e-5, 1e-4, 1e-3}, FREEDOM's edge dropout {0.8, 0.9}, LATTICE's learning rate
    # {1e-4 .. 5e-3}; the paper's settings are trial 0 through --settings
    "item_graph": {
        "models": ["freedom", "lattice"],
        "space": {
            "lr": ("log", 1e-4, 1e-2),
            "reg_weight": ("categorical", [0.0, 1e-5, 1e-4, 1e-3]),
            "edge_dropout": ("categorical", [0.8, 0.9]),
        },
    },
    # evaluated as built: one trial at the defaults
    "training_free": {"models": ["mostpop", "content_knn"], "space": {}},
    # CROSSAN and its controls: the paper's lr range (1e-5..1e-3, section 5), hidden sizes
    # searched there ({32, 64, 128}). Not run yet: `tune` loads the dataset's own features,
    # not the title fields these models read (benchmarks/sequential.py runs them)
    "sequential": {
        "models": ["crossan", "crossan_id", "indsan", "sasrec", "sasrec_text"],
        "space": {
            "lr": ("log", 1e-5, 1e-3),
            "embed_dim": ("categorical", [32, 64, 128]),
            "adapter_dim": ("categorical", [32, 64, 128]),
            "dropout": ("float", 0.0, 0.3),
        },
    },
}

TRAIN_FIELDS = ("lr", "l2", "l2_scope")
DATA_FIELDS = ("feature_set", "state_layers", "state_pooling")  # what prepare_dataset reads
SEEDS_FROM = 2024
METRICS = ("recall@20", "ndcg@20")
PARTS = ("all", "warm", "cold", "cold_among_cold")
SHARE = "cold_share@20"
CONTENT_REFERENCE = "content_knn"
SERVED = "served"  # per-user arrays of all rows under the as-served protocol


# --------------------------------------------------------------------------------------------
# Shared
# --------------------------------------------------------------------------------------------


def family_of(model: str) -> str:
    for family, entry in SEARCH_SPACES.items():
        if model in entry["models"]:
            return family
    raise ValueError(f"model {model!r} is in no family of SEARCH_SPACES")


def space_for(model: str) -> dict[str, tuple[Any, ...]]:
    """The model's family space without the hyperparameters the model does not take."""
    takes = set(default_hparams(model)) | set(TRAIN_FIELDS)
    return {k: v for k, v in SEARCH_SPACES[family_of(model)]["space"].items() if k in takes}


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
    return {k: v for k, v in fields.items() if v is not None}


def fit(
    dataset: Dataset, model: str, setting: dict[str, Any], **fields: Any
) -> tuple[TrainResult, dict[str, Any] | None]:
    """Train with early stopping (the trainer calibrates the new-item scale on validation)."""
    config = TrainConfig(model=model, **setting, **fields)
    result = train(dataset, config, progress=False)
    return result, result.calibration


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


# --------------------------------------------------------------------------------------------
# tune
# --------------------------------------------------------------------------------------------


def merged_setting(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A trial's setting: the sampled ``params`` over the ``base`` setting of the study."""
    sampled = setting_of(params)
    hparams = {**base.get("hparams", {}), **sampled.pop("hparams")}
    return {**base, **sampled, "hparams": hparams}


def first_trial(base: dict[str, Any], model: str, space: dict[str, Any]) -> dict[str, Any]:
    """The base setting as values of the searched parameters (model defaults elsewhere)."""
    flat = {**TrainConfig(model=model).model_dump(), **default_hparams(model), **base,
            **base.get("hparams", {})}
    return {name: flat[name] for name in space if name in flat}


def _trial_record(trial: optuna.trial.FrozenTrial, base: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "setting": merged_setting(base, trial.params),
        "value": trial.value,
        **trial.user_attrs,
    }


def tune(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """One Optuna study of ``args.model``; the JSON is rewritten after every trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    tag = data_tag(args.data)
    out = Path(args.out or OPTUNA_DIR / f"{tag}-{args.model}.json")
    fields = {**fixed_fields(args), "seed": args.seed}
    dataset = prepare_dataset(args.data, TrainConfig(model=args.model, **fields))
    space = space_for(args.model)
    if args.search:  # search only these; the rest stays at the base setting
        names = [n.strip() for n in args.search.split(",") if n.strip()]
        if unknown := sorted(set(names) - set(space)):
            raise SystemExit(f"--search: {', '.join(unknown)} not in {args.model}'s space "
                             f"({', '.join(space)})")
        space = {n: space[n] for n in names}
    training_free = family_of(args.model) == "training_free"
    # the fixed part of every trial (e.g. the served new-item slots), searched keys win
    base = json.loads(Path(args.settings).read_text()).get(args.model, {}) if args.settings else {}
    storage = f"sqlite:///{Path(args.storage).resolve()}" if args.storage else None

    def sampler(seed: int) -> optuna.samplers.TPESampler:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=args.startup_trials)

    study = optuna.create_study(
        direction="maximize",
        sampler=sampler(args.sampler_seed),
        storage=storage,
        study_name=f"{tag}-{args.model}",
        load_if_exists=True,
    )
    if study.trials:  # resumed: a sampler seeded as before would redraw the first trials
        study.sampler = sampler(args.sampler_seed + len(study.trials))
    elif base and space:  # the hand-chosen setting is trial 0: the study can only improve on it
        study.enqueue_trial(first_trial(base, args.model, space))
    record: dict[str, Any] = {
        "data": args.data,
        "model": args.model,
        "command": command_line(argv),
        "objective": "valid recall@20 (after early stopping and new-item calibration)",
        "sampler": f"TPESampler(seed={args.sampler_seed}, "
        f"n_startup_trials={args.startup_trials})",
        "fixed": fields,
        "base": base,
        "space": space,
        "dataset": dataset.summary(),
    }

    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, spec) for name, spec in space.items()}
        result, calibration = fit(dataset, args.model, merged_setting(base, params), **fields)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("seconds_per_epoch", result.seconds_per_epoch)
        trial.set_user_attr("valid", headline(result.valid_report))
        trial.set_user_attr("cold_scale", calibration["chosen"] if calibration else None)
        return float(result.valid_metrics["recall@20"])

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        record["trials"] = [_trial_record(t, base) for t in study.trials]
        record["best"] = _trial_record(study.best_trial, base) if done else None
        _write_json(out, record)
        best = f"best {study.best_value:.4f} (#{study.best_trial.number})" if done else "no best"
        value = "failed" if trial.value is None else f"valid R@20 {trial.value:.4f}"
        print(
            f"{args.model} trial {trial.number}: {value}, {best}, "
            f"epoch {trial.user_attrs.get('best_epoch')}, "
            f"{trial.user_attrs.get('seconds_per_epoch', 0.0):.2f} s/epoch, {trial.params}",
            flush=True,
        )

    study.optimize(
        objective,
        n_trials=1 if training_free else args.trials,
        timeout=args.timeout,
        callbacks=[after_trial],
        catch=(ValueError,),  # e.g. embeddings diverged to NaN at a high lr: a failed trial
    )
    return record


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------


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


def array_key(model: str, seed: int, part: str, what: str) -> str:
    return f"{model}__{seed}__{part}__{what}"


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
        _write_json(out, record)  # after every model, so a long run keeps what it finished
        np.savez_compressed(arrays_path, **arrays)
    return record


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return f"{np.mean(present):.4f} ± {std:.4f}"


def per_user_mean(
    arrays: dict[str, np.ndarray], model: str, seed_list: Sequence[int], part: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user recall averaged over the seeds that evaluated the user (union of users)."""
    found = [
        (arrays[array_key(model, s, part, "users")], arrays[array_key(model, s, part, "recall")])
        for s in seed_list
        if array_key(model, s, part, "users") in arrays
    ]
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    ids = np.unique(np.concatenate([u for u, _ in found]))
    sums, counts = np.zeros(ids.size), np.zeros(ids.size)
    for users, recall in found:
        at = np.searchsorted(ids, users)
        sums[at] += recall
        counts[at] += 1
    return ids, sums / counts


def _interval(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> str:
    common = np.intersect1d(a[0], b[0], assume_unique=True)
    if common.size == 0:
        return "–"
    diff, low, high = paired_bootstrap(
        a[1][np.searchsorted(a[0], common)], b[1][np.searchsorted(b[0], common)]
    )
    mark = " *" if low > 0 or high < 0 else ""
    return f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]{mark}"


def _load_runs(paths: Sequence[Path]) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
    models: dict[str, Any] = {}
    commands: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    for path in paths:
        record = json.loads(path.read_text())
        for key, entry in record["models"].items():
            known = models.get(key)
            if known is not None and known["setting"] == entry["setting"] \
                    and known.get("fixed") == entry.get("fixed"):
                # the same row run in parts (e.g. one seed per process): its runs are merged
                seeds = {r["seed"] for r in entry["runs"]}
                entry = {**entry, "runs": sorted(
                    [r for r in known["runs"] if r["seed"] not in seeds] + entry["runs"],
                    key=lambda r: r["seed"])}
            models[key] = entry
        commands += [c for c in record.get("commands", []) if c not in commands]
        if path.with_suffix(".npz").exists():
            arrays.update(dict(np.load(path.with_suffix(".npz"))))
    return models, commands, arrays


def _served_table(models: dict[str, Any]) -> list[str]:
    """All-row test metrics under both protocols, side by side."""
    lines = ["| model | seeds | R@20 today | R@20 as served | N@20 today | N@20 as served |",
             "|---|---|---|---|---|---|"]
    for model, entry in models.items():
        runs = [r for r in entry["runs"] if "test_served" in r]
        if not runs:
            continue
        cells = [model, str(len(runs))]
        for metric in METRICS:
            cells += [_mean_std([r["test"][metric]["all"] for r in runs]),
                      _mean_std([r["test_served"][metric]["all"] for r in runs])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _summary_table(models: dict[str, Any]) -> list[str]:
    head = ["model", "seeds"]
    for part in PARTS:
        head += [f"R@20 {part}", f"N@20 {part}"]
    head += [SHARE, "best epoch", "s/epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(
        models, key=lambda m: -np.mean([r["test"]["recall@20"]["all"] for r in models[m]["runs"]])
    )
    for model in order:
        runs = models[model]["runs"]
        cells = [model, str(len(runs))]
        for part in PARTS:
            cells += [_mean_std([r["test"][m][part] for r in runs]) for m in METRICS]
        cells += [
            _mean_std([r["test"][SHARE] for r in runs]),
            f"{np.mean([r['best_epoch'] for r in runs]):.1f}",
            f"{np.mean([r['seconds_per_epoch'] for r in runs]):.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _interval_table(
    models: dict[str, Any], arrays: dict[str, np.ndarray], references: Sequence[str]
) -> list[str]:
    served = any(key.endswith(f"__{SERVED}__users") for key in arrays)
    parts = (*PER_USER_PARTS, SERVED) if served else PER_USER_PARTS
    per_user = {
        (model, part): per_user_mean(arrays, model, [r["seed"] for r in entry["runs"]], part)
        for model, entry in models.items()
        for part in parts
    }
    head = ["model"] + [f"vs {ref}, {'all rows as served' if part == SERVED else part + ' rows'}"
                        for ref in references for part in parts]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in models:
        cells = [model]
        for ref in references:
            for part in parts:
                same = model == ref
                cells.append("–" if same else _interval(per_user[model, part], per_user[ref, part]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _curve_tables(models: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for model, entry in models.items():
        curves = [r["calibration"] for r in entry["runs"]
                  if r["calibration"] and r["calibration"]["curve"]]
        if not curves:
            continue
        chosen = [c["chosen"] for c in curves]
        lines += [
            f"\n### {model} (chosen on validation: {', '.join(str(c) for c in chosen)})\n",
            "| new-item scale | chosen (seeds) | valid R@20 all | test R@20 all | test R@20 warm "
            f"| test R@20 cold | test R@20 cold among cold | test {SHARE} |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for index, point in enumerate(curves[0]["curve"]):
            at = [c["curve"][index] for c in curves]
            cells = [
                str(point["scale"]),
                str(chosen.count(point["scale"])),
                _mean_std([p["valid_all"] for p in at]),
                *(_mean_std([p["test"][part] for p in at]) for part in PARTS),
                _mean_std([p["test"][SHARE] for p in at]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _point_tables(
    models: dict[str, Any], curve: str, field: str, title: str, record: str = "calibration"
) -> list[str]:
    """Mean ± std over seeds of a curve kept in each run's ``record``."""
    lines: list[str] = []
    for model, entry in models.items():
        curves = [r[record][curve] for r in entry["runs"]
                  if r.get(record) and r[record].get(curve)]
        if not curves:
            continue
        lines += [
            f"\n### {model}\n",
            f"| {title} | valid R@20 all | valid R@20 cold | test R@20 all | test R@20 warm "
            f"| test R@20 cold | test R@20 cold among cold | test {SHARE} |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for index, point in enumerate(curves[0]):
            at = [c[index] for c in curves]
            # older records kept only the valid all-rows number
            valid = [p.get("valid") or {"all": p.get("valid_all")} for p in at]
            cells = [
                str(point[field]),
                _mean_std([v.get("all") for v in valid]),
                _mean_std([v.get("cold") for v in valid]),
                *(_mean_std([p["test"][part] for p in at]) for part in PARTS),
                _mean_std([p["test"][SHARE] for p in at]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pooled_table(models: dict[str, Any]) -> list[str]:
    """Recall@20 of each part pooled over the runs' rows (the cold-start folds' protocol)."""
    head = ["model", "runs", *(f"R@20 {part}" for part in PARTS), "cold rows"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, entry in models.items():
        runs = entry["runs"]
        cells = [model, str(len(runs))]
        for part in PARTS:
            rows_of = "cold" if part == "cold_among_cold" else part
            weights = [r["test"]["rows"].get(rows_of, 0) if rows_of != "all"
                       else sum(r["test"]["rows"].values()) for r in runs]
            values = [r["test"]["recall@20"][part] for r in runs]
            pairs = [(w, v) for w, v in zip(weights, values, strict=True) if v is not None]
            total = sum(w for w, _ in pairs)
            cells.append(f"{sum(w * v for w, v in pairs) / total:.4f}" if total else "–")
        cells.append(str(sum(r["test"]["rows"].get("cold", 0) for r in runs)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """The markdown report of the seeds file(s); it starts with the commands behind it."""
    tag = data_tag(args.data)
    paths = [Path(p) for p in (args.runs or [OPTUNA_DIR / f"seeds-{tag}.json"])]
    models, seed_commands, arrays = _load_runs(paths)
    if not models:
        raise SystemExit(f"no model runs in {', '.join(map(str, paths))}")
    tune_commands = []
    for entry in models.values():
        if entry.get("tuned") and Path(entry["tuned"]).exists():
            source = json.loads(Path(entry["tuned"]).read_text())
            if "command" in source:  # an Optuna study; a --settings file has no command
                tune_commands.append(source["command"])
    commands = [*dict.fromkeys(tune_commands), *seed_commands, command_line(argv)]
    baselines = args.baseline or ["lightgcn"]
    references = [r for r in dict.fromkeys([*baselines, CONTENT_REFERENCE]) if r in models]
    fixed = sorted({json.dumps(e.get("fixed", {}), sort_keys=True) for e in models.values()})
    machines = sorted({e.get("machine", "?") for e in models.values()})
    settings = "\n".join(
        f"- {m}: {json.dumps(e['setting'])} ({e['tuned'] or 'defaults, never tuned'})"
        for m, e in models.items()
    )
    text = "\n".join([
        f"# Quality on {tag} (test split, settings chosen on validation only), produced by",
        "```",
        *commands,
        "```",
        "",
        f"Report written {time.strftime('%Y-%m-%d')}; runs on {', '.join(machines)} (s/epoch "
        f"depends on it). Training fields of the runs: {', '.join(fixed)}.",
        "Cold rows: test rows whose item has no training interaction; *cold* ranks them among "
        "all items, *cold among cold* among the cold items only. Models with a new-item path use "
        "the new-item scale chosen on validation Recall@20.",
        "",
        "Settings:",
        settings,
        "",
        "## Test metrics, mean ± std (ddof 1) over seeds",
        "",
        *_summary_table(models),
        "",
        "## Both protocols: today's (a test user is its training vector) and as served (every "
        "user embedded after its validation item too, as the service embeds a user)",
        "",
        *(_served_table(models) if any("test_served" in r for e in models.values()
                                       for r in e["runs"]) else ["(runs before issue 20)"]),
        "",
        "## Paired bootstrap of per-user test Recall@20 differences (model − reference)",
        "",
        "Per user, Recall@20 averaged over the seeds; 95% percentile interval of the mean "
        "difference over users resampled with replacement (2000 resamples, seed 0); * marks an "
        "interval that excludes 0. Cold rows: users with a test row on a cold item (in any seed, "
        "when held-out items follow the seed).",
        "",
        *(_interval_table(models, arrays, references) if references else ["(no reference run)"]),
        "",
        "## Test Recall@20 pooled over the runs' rows",
        "",
        "Each part's Recall@20 weighted by its rows in each run: with --cold-start-folds the "
        "runs hold out disjoint items, and this is the pooled cold-start number.",
        "",
        *_pooled_table(models),
        "",
        "## New-item scale: warm/cold trade-off (mean ± std over seeds)",
        *(_curve_tables(models) or ["", "(no model with a new-item scale)"]),
        "",
        "## Reserved new-item slots at the chosen scale (mean ± std over seeds)",
        *(_point_tables(models, "slot_curve", "slot_share", "reserved share")
          or ["", "(no run recorded a slot curve)"]),
        "",
        "## Factor on the content-kNN weight, chosen on validation after training "
        "(mean ± std over seeds)",
        *(_point_tables(models, "curve", "knn_scale", "kNN factor", record="knn_scale")
          or ["", "(no run recorded a kNN-factor curve)"]),
        "",
        "## Weight of the fused part in new items' vectors (mean ± std over seeds)",
        *(_point_tables(models, "fused_weight_curve", "fused_weight", "fused weight")
          or ["", "(no run recorded a fused-weight curve)"]),
        "",
    ])
    out = Path(args.out or RESULTS / f"quality_{tag}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return text


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _training_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="tiktok", help="dataset name or folder")
    parser.add_argument("--max-epochs", type=int, help="TrainConfig default when omitted")
    parser.add_argument("--patience", type=int, help="TrainConfig default when omitted")
    parser.add_argument("--batch-size", type=int, help="TrainConfig default when omitted")
    parser.add_argument("--cold-start-fraction", type=float, help="items held out of training")
    parser.add_argument("--epoch-valid-users", type=int,
                        help="validate each epoch on a fixed sample of this many users")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-report-curves", action="store_true",
                        help="skip the test side of the calibration curves (choices unchanged)")
    parser.add_argument("--threads", type=int, help="torch threads (the machine may be shared)")
    parser.add_argument("--out", help="output file (default under benchmarks/results)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tuner = sub.add_parser("tune", help="Optuna search of one model on validation Recall@20")
    _training_flags(tuner)
    tuner.add_argument("--model", required=True, choices=MODEL_NAMES)
    tuner.add_argument("--trials", type=int, default=30)
    tuner.add_argument("--timeout", type=float, help="seconds; stop starting trials after it")
    tuner.add_argument("--seed", type=int, default=SEEDS_FROM, help="training seed of trials")
    tuner.add_argument("--sampler-seed", type=int, default=0)
    tuner.add_argument("--storage", help="SQLite file to resume the study from (optional)")
    tuner.add_argument("--startup-trials", type=int, default=10,
                       help="random trials before TPE models the results (Optuna's default 10)")
    tuner.add_argument("--settings", help="JSON {model: setting}: the fixed base of every trial, "
                       "and trial 0 when the study is new")
    tuner.add_argument("--search", help="comma-separated names: search only these of the "
                       "model's space (the rest stays at the --settings base)")
    seeder = sub.add_parser("seeds", help="chosen settings over several seeds")
    _training_flags(seeder)
    seeder.add_argument("--models", required=True, help="comma-separated model names")
    seeder.add_argument("--seeds", type=int, default=3, help="seeds --seed-from, +1, ...")
    seeder.add_argument("--seed-from", type=int, default=SEEDS_FROM,
                        help="first seed (a row run in parts: the report merges its runs)")
    seeder.add_argument("--tuned-dir", default=str(OPTUNA_DIR), help="where tune wrote JSON")
    seeder.add_argument("--cold-start-folds", type=int, default=0,
                        help="run i holds out fold i of the items (disjoint; replaces --seeds)")
    seeder.add_argument("--label", default="", help="suffix of the row name, e.g. '[rank=8]'")
    seeder.add_argument("--hparam", action="append", help="key=value over the setting (ablations)")
    seeder.add_argument(
        "--settings", help="JSON {model: {lr, l2, l2_scope, hparams}}; wins over --tuned-dir"
    )
    reporter = sub.add_parser("report", help="markdown tables of the seeds file(s)")
    reporter.add_argument("--data", default="tiktok")
    reporter.add_argument("--baseline", action="append",
                          help="reference row of the paired intervals, repeatable (default "
                          "lightgcn; content kNN is always added)")
    reporter.add_argument("--runs", nargs="+", help="seeds JSON file(s); later ones win")
    reporter.add_argument("--out", help="default benchmarks/results/quality_<data>.md")
    return parser


def main(argv: Sequence[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if getattr(args, "models", None):
        unknown = [m for m in args.models.split(",") if m.strip() and m.strip() not in MODEL_NAMES]
        if unknown:
            raise SystemExit(f"unknown model(s) {', '.join(unknown)}; valid: {MODEL_NAMES}")
    return {"tune": tune, "seeds": seeds, "report": report}[args.command](args, argv)


if __name__ == "__main__":
    main()
