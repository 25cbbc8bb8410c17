"""``python -m training compare``: bundles side by side, from their manifests and histories
(nothing is loaded but JSON): one row per bundle, the config fields that differ as columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bundle as bundle_format
from training.config import flatten_fields

METRIC_COLUMNS = (  # column -> (report path in the manifest's metrics, metric)
    ("valid R@20", ("valid",), "recall@20"),
    ("valid N@20", ("valid",), "ndcg@20"),
    ("test R@20", ("test",), "recall@20"),
    ("test N@20", ("test",), "ndcg@20"),
    ("warm test R@20", ("test_report", "warm"), "recall@20"),
    ("cold test R@20", ("test_report", "cold"), "recall@20"),
)


def _metric(metrics: dict[str, Any], path: tuple[str, ...], name: str) -> str:
    value: Any = metrics
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    value = value.get(name) if isinstance(value, dict) else None
    return "-" if value is None else f"{value:.4f}"


def bundle_row(path: str | Path) -> tuple[dict[str, str], dict[str, Any]]:
    """A bundle's row and its flattened config (``BundleError`` if it is no bundle)."""
    path = Path(path)
    manifest = bundle_format.read_manifest(path)
    history: dict[str, Any] = {}
    if bundle_format.HISTORY in manifest.files and (path / bundle_format.HISTORY).is_file():
        history = json.loads((path / bundle_format.HISTORY).read_text())
    metrics, dataset = manifest.metrics, manifest.dataset
    timings = history.get("timings") or {}
    seconds = sum(timings.values()) if timings else manifest.training_seconds
    stopped = history.get("stopped_by", "")
    row = {
        "bundle": str(path),
        "version": manifest.version,
        # the train-time version: a published bundle's version is its publish name
        "trained as": manifest.run_id or "-",
        "model": manifest.model,
        "data": f"{dataset.get('name', '?')} ({dataset.get('num_users', '?')} users, "
                f"{dataset.get('num_items', '?')} items)",
        "epochs run/best": f"{metrics.get('epochs_run', '?')}/{metrics.get('best_epoch', '?')}"
                           + (f" ({stopped.replace('_', ' ')})" if stopped else ""),
        **{column: _metric(metrics, where, name) for column, where, name in METRIC_COLUMNS},
        "time s": "-" if seconds is None else f"{seconds:.1f}",
    }
    return row, flatten_fields(manifest.config)


def compare_rows(paths: list[str | Path]) -> list[dict[str, str]]:
    """One row per bundle, with a ``config: <field>`` column for each config field whose
    value is not the same in every bundle."""
    rows, configs = zip(*(bundle_row(p) for p in paths), strict=True)
    keys = sorted({k for config in configs for k in config})
    differing = [k for k in keys
                 if len({json.dumps(c.get(k, "(unset)"), sort_keys=True) for c in configs}) > 1]
    return [{**row, **{f"config: {k}": _cell(config.get(k, "-")) for k in differing}}
            for row, config in zip(rows, configs, strict=True)]


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def format_table(rows: list[dict[str, str]], markdown: bool = False) -> list[str]:
    """Aligned text columns, or a Markdown table."""
    columns = list(rows[0])
    if markdown:
        return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
                *("| " + " | ".join(row[c] for c in columns) + " |" for row in rows)]
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    return ["  ".join(f"{c:<{widths[c]}}" for c in columns).rstrip(),
            *("  ".join(f"{row[c]:<{widths[c]}}" for c in columns).rstrip() for row in rows)]
