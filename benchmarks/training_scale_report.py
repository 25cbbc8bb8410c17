"""The tables of ``benchmarks/training_scale.py``: its rows, the lines fitted through them,
one process against two."""

from __future__ import annotations

import math
import shlex
from typing import Any

import numpy as np


def fit_line(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: ``(a, b, largest relative error on the points)``."""
    if len(set(x)) < 2:
        return math.nan, math.nan, math.nan
    b, a = np.polyfit(np.asarray(x), np.asarray(y), 1)
    error = max(abs(a + b * xi - yi) / yi for xi, yi in zip(x, y, strict=True))
    return float(a), float(b), float(error)


def measured(row: dict[str, Any], model: str) -> bool:
    return row["model"] == model and row["processes"] == 1 and "epoch_seconds" in row \
        and not row.get("skipped")


def fit_model(rows: list[dict[str, Any]], model: str, fit_from: float) -> dict[str, Any]:
    """``s/epoch = a + b·M``, ``s/step = c0 + c1·M`` and ``GiB = g0 + g1·M`` (M million
    interactions an epoch) through ``model``'s one-process rows of at least ``fit_from``
    interactions (all its rows where fewer than two sizes reach that), and what each says an
    epoch of a billion interactions takes."""
    mine = [r for r in rows if measured(r, model)]
    large = [r for r in mine if r["interactions"] >= fit_from]
    mine = large if len({r["data"] for r in large}) >= 2 else mine
    m = [r["interactions"] / 1e6 for r in mine]
    a, b, err = fit_line(m, [r["epoch_seconds"] for r in mine])
    c0, c1, step_err = fit_line(m, [r["seconds_per_step"] for r in mine])
    g0, g1, gib_err = fit_line(m, [r["rss_gib"] for r in mine])
    batch = mine[0]["batch"] if mine else 1
    return {"a": a, "b": b, "err": err, "c0": c0, "c1": c1, "step_err": step_err,
            "g0": g0, "g1": g1, "gib_err": gib_err, "batch": batch,
            "sizes": [r["data"] for r in mine],
            "linear_hours_per_billion": (a + b * 1000.0) / 3600.0,
            "step_hours_per_billion": 1e9 / batch * (c0 + c1 * 1000.0) / 3600.0}


def fits(rows: list[dict[str, Any]], fit_from: float) -> dict[str, dict[str, Any]]:
    return {model: fit_model(rows, model, fit_from)
            for model in dict.fromkeys(r["model"] for r in rows)}


def seconds_cell(row: dict[str, Any]) -> str:
    seconds = row["epoch_seconds"]
    value = f"{seconds:,.{sum(seconds < edge for edge in (100, 10, 1))}f}"
    if row.get("skipped"):
        return f"≈{value} (pred. by the s/step line; {row['skipped']})"
    if not row["estimated"]:
        return value
    return f"{value} (est., {row['timed_steps']} of {row['steps_per_epoch']:,} steps)"


def render(rows: list[dict[str, Any]], argv: list[str], fit_from: float) -> str:
    lines = ["# Training cost against data size (epoch time, peak memory)", "", "```",
             shlex.join(["python", "benchmarks/training_scale.py", *argv]), "```", "",
             "| data | model | users | items | interactions | processes | s/epoch "
             "| peak RSS GiB | s per million interactions |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        head = f"| {r['data']} | {r['model']} |"
        if "failed" in r:
            lines.append(f"{head} - | - | - | {r['processes']} | {r['failed']} | - | - |")
            continue
        guess = "≈" if r.get("skipped") else ""
        lines.append(f"{head} {r['users']:,} | {r['items']:,} | {guess}{r['interactions']:,} | "
                     f"{r['processes']} | {seconds_cell(r)} | {guess}{r['rss_gib']:.2f} | "
                     f"{guess}{r['epoch_seconds'] / (r['interactions'] / 1e6):,.1f} |")
    threads = rows[0]["threads"] if rows else 0
    loads = [r["load"] for r in rows if "load" in r] or [math.nan]
    lines += ["", f"CPU, {threads} torch threads a configuration (split between the ranks of "
              "a 2-process run), one process a configuration. interactions: the rows one epoch "
              "passes over (both configurations are refits: training + validation). s/epoch: "
              "the trainer's loop only (no validation), after a warm-up: the fastest of 2-3 "
              "whole epochs, or (est.) the median of the first steps, each timed, times the "
              "steps of an epoch. Peak RSS: the process's ru_maxrss, data included; 2 "
              "processes: the sum of the ranks'. The cores are shared with other work: the "
              f"1-minute load average at the end of the runs was {min(loads):.1f} to "
              f"{max(loads):.1f}.", ""]
    lines += render_fits(fits(rows, fit_from)) + render_pairs(rows)
    return "\n".join(lines) + "\n"


def _number(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def render_fits(fitted: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Fitted lines (one process, M = million interactions an epoch)", "",
             "| model | fitted on | s/epoch = a + b·M (worst error) "
             "| s/step = c0 + c1·M (worst error) | GiB = g0 + g1·M (worst error) "
             "| h/epoch at 1 billion: straight line | h/epoch at 1 billion: steps × s/step |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, f in fitted.items():
        def line(a: str, b: str, err: str, digits: int, f: dict[str, Any] = f) -> str:
            error = "" if math.isnan(f[err]) else f" ({f[err]:.0%})"
            return f"{_number(f[a], digits)} + {_number(f[b], digits)}·M{error}"

        lines.append(
            f"| {model} | {', '.join(f['sizes'])} | {line('a', 'b', 'err', 1)} | "
            f"{line('c0', 'c1', 'step_err', 4)} | {line('g0', 'g1', 'gib_err', 3)} | "
            f"{_number(f['linear_hours_per_billion'], 0)} | "
            f"{_number(f['step_hours_per_billion'], 0)} |")
    return lines + [
        "", "Per node (this CPU, the threads above), one epoch, fitted on the measured sizes of "
        "at least --fit-from interactions. Every step propagates the whole graph, so the "
        "seconds of a step grow with the data and those of an epoch with its square: the "
        "steps × s/step column (the configured batch) is the one to plan with; the straight "
        "line only holds near the sizes it was fitted on. The GiB line is one process's "
        "peak: every rank of a data-parallel run holds it whole.", ""]


def render_pairs(rows: list[dict[str, Any]]) -> list[str]:
    done = [r for r in rows if "epoch_seconds" in r and not r.get("skipped")]
    one = {(r["data"], r["model"]): r for r in done if r["processes"] == 1}
    pairs = [(one[(r["data"], r["model"])], r) for r in done
             if r["processes"] > 1 and (r["data"], r["model"]) in one]
    if not pairs:
        return []
    lines = ["## One process against two (torchrun, gloo, same global batch)", "",
             "| data | model | 1 process s/epoch | 2 processes s/epoch | speed-up "
             "| peak RSS GiB 1 / 2 |", "| --- | --- | --- | --- | --- | --- |"]
    for a, b in pairs:
        lines.append(f"| {a['data']} | {a['model']} | {seconds_cell(a)} | {seconds_cell(b)} | "
                     f"{a['epoch_seconds'] / b['epoch_seconds']:.2f}x | "
                     f"{a['rss_gib']:.2f} / {b['rss_gib']:.2f} |")
    return lines + ["", f"1 process: {one[pairs[0][0]['data'], pairs[0][0]['model']]['threads']}"
                    f" threads; 2 processes: {pairs[0][1]['threads']} thread(s) each. Every "
                    "rank propagates the whole graph and holds the whole model; only the "
                    "per-triple work of a step is split.", ""]
