"""The quality report of seed runs: ``python benchmarks/tune.py report`` (see its help).

Mean ± std over seeds, paired bootstrap intervals of per-user test Recall@20 against the
references, both test protocols, the new-item trade-off curves ->
``benchmarks/results/quality_<data>.md``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (  # noqa: E402
    CONTENT_REFERENCE,
    METRICS,
    OPTUNA_DIR,
    PARTS,
    RESULTS,
    SERVED,
    SHARE,
    array_key,
    command_line,
    data_tag,
)
from benchmarks.stats import paired_bootstrap  # noqa: E402
from training.report import PER_USER_PARTS  # noqa: E402


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
