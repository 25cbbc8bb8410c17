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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (  # noqa: E402
    OPTUNA_DIR,
    SEEDS_FROM,
    TRAIN_FIELDS,
    command_line,
    data_tag,
    fit,
    fixed_fields,
    setting_of,
    write_json,
)
from benchmarks.quality_report import report  # noqa: E402
from benchmarks.seed_runs import seeds  # noqa: E402
from models.registry import MODEL_NAMES, default_hparams  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.pipeline import prepare_dataset  # noqa: E402
from training.report import headline  # noqa: E402
from training.select import suggest  # noqa: E402

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


def family_of(model: str) -> str:
    for family, entry in SEARCH_SPACES.items():
        if model in entry["models"]:
            return family
    raise ValueError(f"model {model!r} is in no family of SEARCH_SPACES")


def space_for(model: str) -> dict[str, tuple[Any, ...]]:
    """The model's family space without the hyperparameters the model does not take."""
    takes = set(default_hparams(model)) | set(TRAIN_FIELDS)
    return {k: v for k, v in SEARCH_SPACES[family_of(model)]["space"].items() if k in takes}


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
        write_json(out, record)
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
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="any TrainConfig field, JSON values (repeatable; as train --set)")
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
