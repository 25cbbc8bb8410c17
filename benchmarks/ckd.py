"""CKD on TikTok and MicroLens-50K: seed runs with and without it, its ablations, per-modality
metrics, the learning-speed curves (the paper's Figure 1) and the table (issue 10).

    python benchmarks/ckd.py run --models metammf_lightgcn,early_lightgcn \\
        --variants base,ckd --seeds 3 [--threads 1] [--out FILE]
    python benchmarks/ckd.py run --data microlens-50k --settings configs/microlens_ckd.json \
        --models early_lightgcn --variants base,ckd,no_generic --seeds 1 --out FILE
    python benchmarks/ckd.py curves --model metammf_lightgcn --epochs 40
    python benchmarks/ckd.py report --runs FILE... [--curves FILE]

``run`` trains each model at its validation-chosen setting (``--settings``, the quality
runs' ``configs/tiktok_slots.json``, patience 15 as there; on MicroLens-50K
``configs/microlens_ckd.json``: the two title fields as the two modalities, a 10-epoch
budget) as variant ``base`` (no CKD), ``ckd`` (all of it), an ablation (``no_teachers``,
``no_specific``, ``no_generic``, ``no_reweight``) or full CKD with changed settings
(``weight=0.1``, ``beta=1+temperature=1``: a validation sweep), and records validation and
test Recall/NDCG@20 (all, warm, cold rows), the student's test Recall@20 in each uni-modal
view (every other modality at its mean), CKD's mean modality weights, seconds per epoch and
every test user's Recall@20 (packed in the record, so that ``report`` gives paired intervals
from the committed file alone); a run file holds one data set. Teachers are trained once per
model setting and cached (:mod:`training.ckd`); their time and metrics are recorded.
``curves`` trains a model for a fixed number of epochs with and without CKD and validates the
joint model and each uni-modal view after every epoch. ``report`` writes
``benchmarks/results/ckd.md`` (and ``ckd_curves.png`` from the curves).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stats import pack_values, paired_bootstrap, unpack_values  # noqa: E402
from training.ckd import load_teacher, teacher_paths, with_ckd  # noqa: E402
from training.config import CKDConfig, TrainConfig  # noqa: E402
from training.data import Dataset  # noqa: E402
from training.pipeline import prepare_dataset  # noqa: E402
from training.report import per_user_hits, warm_cold_report  # noqa: E402
from training.trainer import (  # noqa: E402
    TrainingStep,
    build_for,
    embeddings,
    run_epoch,
    train,
    training_sampler,
    users_after,
)

RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "ckd" / "seeds-tiktok.json"
VARIANTS: dict[str, dict[str, Any] | None] = {
    "base": None,
    "ckd": {},
    "no_teachers": {"teachers": False, "generic": False},
    "no_specific": {"specific": False},
    "no_generic": {"generic": False},
    "no_reweight": {"reweight": False},
}
PARTS = ("all", "warm", "cold")
METRICS = ("recall@20", "ndcg@20")


def variant_ckd(variant: str) -> dict[str, Any] | None:
    """The CKD settings of a named variant, or of ``KEY=VALUE[+KEY=VALUE...]`` (full CKD with
    those :class:`CKDConfig` fields changed, e.g. ``weight=0.1`` for a validation sweep)."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    try:
        fields = dict(part.split("=", 1) for part in variant.split("+"))
        CKDConfig(**fields)
    except ValueError as error:
        raise SystemExit(f"unknown variant {variant!r}: one of {sorted(VARIANTS)} or "
                         f"KEY=VALUE[+KEY=VALUE] of CKD's settings ({error})") from None
    return fields


def config_for(model: str, variant: str, seed: int, args: argparse.Namespace) -> TrainConfig:
    setting = json.loads(Path(args.settings).read_text())[model]
    own = setting.pop("ckd", {})  # the setting's CKD fields (CROSSAN's cost knobs), variants over
    ckd = variant_ckd(variant)
    return TrainConfig(model=model, seed=seed, patience=args.patience, report_curves=False,
                       **setting, ckd=None if ckd is None else CKDConfig(**{**own, **ckd}))


def view_recalls(model: torch.nn.Module, dataset: Dataset, split: str,
                 slot_share: float) -> list[float]:
    """Recall@20 of the model in each uni-modal view (all rows of ``split``)."""
    recalls = []
    for m in range(model.num_modalities):
        with model.modality_view({m}):
            users, items = embeddings(model)
            if split == "test":  # a sequential user has also seen its validation item
                users = users_after(model, users, dataset.valid)
        report = warm_cold_report(users, items, dataset, split, slot_share=slot_share)
        recalls.append(report["all"]["recall@20"])
    return recalls


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.exists() else {"rows": {}, "commands": [],
                                                               "teachers": {}}
    if record.setdefault("data", args.data) != args.data:
        raise SystemExit(f"{out} holds runs on {record['data']}, not {args.data}: another --out")
    record["commands"].append(shlex.join(["python", "benchmarks/ckd.py", *sys.argv[1:]]))
    datasets: dict[int, Dataset] = {}
    for model in args.models.split(","):
        for variant in args.variants.split(","):
            row = f"{model}[{variant}]"
            for seed in range(args.seed_from, args.seed_from + args.seeds):
                config = config_for(model, variant, seed, args)
                if seed not in datasets:
                    datasets[seed] = prepare_dataset(args.data, config)
                dataset = datasets[seed]
                init = with_ckd(dataset, config, progress=not args.quiet)
                result = train(dataset, config, progress=not args.quiet, init_model=init)
                trained = result.model
                users, items = embeddings(trained)
                users = users_after(trained, users, dataset.valid)  # as the trainer's test
                _, recall = per_user_hits(users, items, dataset, "test", 20, "all",
                                          slot_share=config.new_item_slots)
                plugin = trained.loss_plugins[0] if trained.loss_plugins else None
                entry = {
                    "seed": seed,
                    "valid": {p: {m: result.valid_report[p][m] for m in METRICS}
                              for p in PARTS if p in result.valid_report},
                    "test": {p: {m: result.test_report[p][m] for m in METRICS}
                             for p in PARTS if p in result.test_report},
                    "test_views": view_recalls(trained, dataset, "test",
                                               config.new_item_slots),
                    "modalities": dataset.modality_names,
                    "weights": plugin.mean_weights() if plugin else None,
                    "best_epoch": result.best_epoch,
                    "epochs_run": result.epochs_run,
                    "seconds_per_epoch": result.seconds_per_epoch,
                    "test_recall20": pack_values(recall),
                }
                runs = [r for r in record["rows"].get(row, {}).get("runs", [])
                        if r["seed"] != seed]
                record["rows"][row] = {
                    "config": config.model_dump(exclude={"seed"}),
                    "machine": f"{platform.node()}, {torch.get_num_threads()} torch threads",
                    "runs": sorted([*runs, entry], key=lambda r: r["seed"]),
                }
                if config.ckd is not None and config.ckd.teachers:
                    record["teachers"][model] = {
                        name: {k: v for k, v in load_teacher(path)[1].items() if k != "setting"}
                        for name, path in teacher_paths(dataset, config).items()}
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(record, indent=1))
                print(f"{row} seed {seed}: test R@20 {result.test_report['all']['recall@20']:.4f}"
                      f", views {[round(v, 4) for v in entry['test_views']]}, best epoch "
                      f"{result.best_epoch}, {result.seconds_per_epoch:.2f} s/epoch", flush=True)


def curves(args: argparse.Namespace) -> None:
    """Validation Recall@20 of the joint model and each view after every epoch, base vs CKD."""
    if args.threads:
        torch.set_num_threads(args.threads)
    record: dict[str, Any] = {"command": shlex.join(["python", "benchmarks/ckd.py",
                                                     *sys.argv[1:]]), "curves": {}}
    for variant in ("base", "ckd"):
        config = config_for(args.model, variant, args.seed_from, args)
        dataset = prepare_dataset(args.data, config)
        device = torch.device("cpu")
        model = build_for(dataset, config, device)
        init = with_ckd(dataset, config, progress=not args.quiet)
        if init is not None:
            init(model)
        sampler = training_sampler(dataset, config)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
        step = TrainingStep(model, config)
        curve: dict[str, list[float]] = {"joint": [], **{m: [] for m in dataset.modality_names}}
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            run_epoch(model, sampler, optimiser, config, device, step)
            seconds = time.perf_counter() - started
            joint = warm_cold_report(*embeddings(model), dataset, "valid")["all"]["recall@20"]
            curve["joint"].append(joint)
            for name, value in zip(dataset.modality_names,
                                   view_recalls(model, dataset, "valid", 0.0), strict=True):
                curve[name].append(value)
            print(f"{variant} epoch {epoch} ({seconds:.1f} s): joint {joint:.4f}, " + ", ".join(
                f"{n} {curve[n][-1]:.4f}" for n in dataset.modality_names), flush=True)
        record["curves"][variant] = curve
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def plot_curves(record: dict[str, Any], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for axis, (variant, curve) in zip(axes, record["curves"].items(), strict=False):
        for name, values in curve.items():
            axis.plot(range(1, len(values) + 1), values, label=name)
        axis.set_title("without CKD" if variant == "base" else "with CKD")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("validation Recall@20")
    axes[1].legend()
    fig.suptitle("Joint model and its uni-modal views (other modality at its mean)")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


def _table(rows: dict[str, Any]) -> list[str]:
    """The runs' table and the paired intervals against each model's base row."""
    lines = ["| row | seeds | valid R@20 | R@20 | N@20 | R@20 warm | R@20 cold | views R@20 "
             "| weights | best epoch | s/epoch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        runs = row["runs"]

        def values(part: str, metric: str, runs=runs) -> list[float]:
            return [r["test"][part][metric] for r in runs if part in r["test"]]

        modalities = runs[0]["modalities"]
        views = ", ".join(f"{m} {_mean_std([r['test_views'][k] for r in runs])}"
                          for k, m in enumerate(modalities))
        weights = "-" if runs[0]["weights"] is None else ", ".join(
            f"{m} {np.mean([r['weights'][k] for r in runs]):.2f}"
            for k, m in enumerate(modalities))
        valid = _mean_std([r["valid"]["all"]["recall@20"] for r in runs])
        lines.append(
            f"| {name} | {len(runs)} | {valid} | {_mean_std(values('all', 'recall@20'))} | "
            f"{_mean_std(values('all', 'ndcg@20'))} | {_mean_std(values('warm', 'recall@20'))}"
            f" | {_mean_std(values('cold', 'recall@20'))} | {views} | {weights} | "
            f"{', '.join(str(r['best_epoch']) for r in runs)} | "
            f"{np.mean([r['seconds_per_epoch'] for r in runs]):.2f} |")
    pairs = []
    for name, row in rows.items():
        model, variant = name.split("[")
        base = rows.get(f"{model}[base]")
        if variant == "base]" or base is None:
            continue
        seeds = sorted({r["seed"] for r in row["runs"]} & {r["seed"] for r in base["runs"]})
        if not seeds:
            continue

        def per_user(entry: dict[str, Any], seeds=seeds) -> np.ndarray:
            return np.mean([unpack_values(r["test_recall20"]) for r in entry["runs"]
                            if r["seed"] in seeds], axis=0)

        mean, low, high = paired_bootstrap(per_user(row), per_user(base))
        pairs.append(f"| {name} | {len(seeds)} | {mean:+.4f} [{low:+.4f}, {high:+.4f}] |")
    if pairs:
        lines += ["", "Paired per-user bootstrap of test Recall@20 against the same model "
                  "without CKD (95%, seeds averaged per user):", "",
                  "| row | seeds | difference [interval] |", "| --- | --- | --- |", *pairs]
    return lines


def _teacher_table(teachers: dict[str, Any]) -> list[str]:
    lines = ["Teachers (trained once per model setting, seed 0, reused by every run):", "",
             "| model | modality | valid R@20 | test R@20 | best epoch | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model, by_modality in teachers.items():
        for modality, info in by_modality.items():
            lines.append(f"| {model} | {modality} | {info['valid']['all']:.4f} | "
                         f"{info['test']['all']:.4f} | {info['best_epoch']} | "
                         f"{info['train_seconds']:.0f} |")
    return lines


def report(args: argparse.Namespace) -> str:
    """``benchmarks/results/ckd.md``: one section per data set of the run files."""
    by_data: dict[str, dict[str, Any]] = {}
    commands: list[str] = []
    for path in map(Path, args.runs):
        part = json.loads(path.read_text())
        found = by_data.setdefault(part.get("data", "tiktok"), {"rows": {}, "teachers": {}})
        found["rows"].update(part["rows"])
        found["teachers"].update(part.get("teachers", {}))
        commands += [c for c in part["commands"] if c not in commands]
    lines = ["# CKD (test split; settings chosen on validation)", "", "Produced by", "", "```",
             *commands, shlex.join(["python", "benchmarks/ckd.py", *sys.argv[1:]]), "```", "",
             "Mean ± std over seeds. *Views*: the student's test Recall@20 with every other "
             "modality at its mean over items. *Weights*: CKD's counterfactual modality weights "
             "averaged over training."]
    for data, found in by_data.items():
        lines += ["", f"## {data}", "", *_table(found["rows"])]
        if found["teachers"]:
            lines += ["", *_teacher_table(found["teachers"])]
    if args.curves and Path(args.curves).exists():
        curve_record = json.loads(Path(args.curves).read_text())
        plot_curves(curve_record, RESULTS / "ckd_curves.png")
        lines += ["", f"Learning-speed curves (`{curve_record['command']}`): "
                  "![curves](ckd_curves.png)"]
    text = "\n".join(lines) + "\n"
    (RESULTS / "ckd.md").write_text(text)
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "curves"):
        part = sub.add_parser(name)
        part.add_argument("--data", default="tiktok")
        part.add_argument("--settings", default=str(ROOT / "configs" / "tiktok_slots.json"))
        part.add_argument("--patience", type=int, default=15)
        part.add_argument("--seed-from", type=int, default=2024)
        part.add_argument("--threads", type=int, default=0)
        part.add_argument("--quiet", action="store_true")
    runner = sub.choices["run"]
    runner.add_argument("--models", default="metammf_lightgcn")
    runner.add_argument("--variants", default="base,ckd")
    runner.add_argument("--seeds", type=int, default=3)
    runner.add_argument("--out", default=str(OUT))
    curve = sub.choices["curves"]
    curve.add_argument("--model", default="metammf_lightgcn")
    curve.add_argument("--epochs", type=int, default=40)
    curve.add_argument("--out", default=str(RESULTS / "ckd" / "curves-tiktok.json"))
    reporter = sub.add_parser("report")
    reporter.add_argument("--runs", nargs="+", default=[str(OUT)])
    reporter.add_argument("--curves", default=str(RESULTS / "ckd" / "curves-tiktok.json"))
    args = parser.parse_args()
    {"run": run, "curves": curves, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
