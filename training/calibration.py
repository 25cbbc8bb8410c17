"""Choose how strongly new items compete with warm ones, on validation.

A model with a new-item path exposes a ``cold_scale`` buffer: the factor on the vectors of
items without training interactions (see :mod:`models.metammf_lightgcn`). Served at 1, new items
may never enter a top-20 (popular warm items hold the top slots) or may crowd warm items out,
depending on how training left the scale of their vectors. Which trade-off is right is a product
decision, so it is *chosen on validation* over a fixed grid, with the number a user of the
service feels as the objective (all-row Recall@20), stored in the model's weights (and so in the
bundle and its exported item tower, which the service runs unchanged).

The trainer calibrates before every validation, so early stopping compares epochs at their own
best scale (an uncalibrated epoch can look bad only because its new items flood the lists), and
once more at the end with the whole curve, test column included, kept for the report. The test
column is reported, never used to choose.

Lists are scored as the service builds them: with reserved new-item slots (``slot_share``, see
:mod:`bundle.serving_rules`) the scale only decides which new items enter *beyond* the
reserved ones. The final curve also gives, at the chosen scale, every reserved share of
:data:`SLOT_GRID` (the other way new items can enter a list).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from models.base import Recommender
from training.data import Dataset
from training.report import SHARE_K, all_rows_and_share, headline, warm_cold_report

#: The final choice (and the reported trade-off curve) is made on this grid ...
SCALE_GRID: tuple[float, ...] = (
    0.1, 0.25, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0
)
#: ... and every epoch's early-stopping score on this coarse one (each point is one validation).
EPOCH_GRID: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 2.0)
#: Reserved new-item shares reported beside the scale curve.
SLOT_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2)
#: Factors on the learned content-kNN weight gamma, chosen on validation after training.
KNN_SCALE_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: Weights of the fused part in new items' vectors reported beside them (the evidence for the
#: configured ``new_item_fused_weight``, which is a design decision, not chosen here).
FUSED_WEIGHT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
OBJECTIVE = "recall@20"


def supports_calibration(model: Recommender) -> bool:
    return isinstance(getattr(model, "cold_scale", None), torch.Tensor)


def supports_knn_scale(model: Recommender) -> bool:
    return isinstance(getattr(model, "knn_scale", None), torch.Tensor)


@torch.no_grad()
def calibrate_knn_scale(
    model: Recommender,
    dataset: Dataset,
    grid: tuple[float, ...] = KNN_SCALE_GRID,
    batch_size: int = 2048,
    *,
    slot_share: float = 0.0,
    with_test: bool = True,
) -> dict[str, Any]:
    """Set ``model.knn_scale`` (the factor on the content-kNN part of the user vectors, see
    :mod:`models.metammf_lightgcn`) to the grid value with the best validation Recall@20 on
    lists as served; ties keep the value closest to 1 (the trained weight).

    Returns ``{"objective", "chosen", "curve": [{"knn_scale", "valid", "test"}]}``, the test
    column reported, never used to choose (without ``with_test``: no curve).
    """
    if not supports_knn_scale(model):
        raise TypeError(f"{type(model).__name__} has no knn_scale to calibrate")
    model.eval()
    # closest to 1 first, so that a tie keeps the factor nearer the trained weight
    order = sorted(grid, key=lambda f: abs(math.log(f)))
    points = _buffer_curve(model, "knn_scale", order, dataset, batch_size, slot_share,
                           with_test)
    best = max(points, key=lambda p: p[1][OBJECTIVE])[0]  # max keeps the first of ties
    model.knn_scale.fill_(best)
    curve = sorted(({"knn_scale": value, **point} for value, _, point in points),
                   key=lambda point: point["knn_scale"]) if with_test else []
    return {"objective": f"valid {OBJECTIVE}", "chosen": best, "curve": curve}


@torch.no_grad()
def calibrate_cold_scale(
    model: Recommender,
    dataset: Dataset,
    grid: tuple[float, ...] = SCALE_GRID,
    batch_size: int = 2048,
    *,
    min_share: float = 0.0,
    slot_share: float = 0.0,
    with_curve: bool = False,
) -> dict[str, Any]:
    """Set ``model.cold_scale`` to the grid value with the best validation Recall@20 among
    those that give new items at least ``min_share`` of the validation top-20 slots (an
    exposure floor; 0 = none). When no scale reaches the floor, the one closest to it wins.

    Returns ``{"chosen", "valid": metrics at the chosen scale, "valid_share"}`` and, with
    ``with_curve``, ``"curve": [{"scale", "valid": headline, "test": headline}]`` (the warm/cold
    trade-off per scale) and ``"slot_curve": [{"slot_share", "valid", "test"}]`` (per reserved
    share, at the chosen scale) and, for models with a ``new_item_fused_weight``,
    ``"fused_weight_curve"`` (per weight, at the chosen scale). Lists reserve ``slot_share``
    for new items throughout. Ties keep the smaller scale.
    """
    if not supports_calibration(model):
        raise TypeError(f"{type(model).__name__} has no cold_scale to calibrate")
    model.eval()
    curve: list[dict[str, Any]] = []
    best: tuple[tuple[bool, float], float, dict[str, float], float] = ((False, -1.0), grid[0], {},
                                                                         0.0)
    for scale in grid:
        model.cold_scale.fill_(scale)
        users, items = model()
        if with_curve:
            point = _curve_point(users, items, dataset, batch_size, slot_share)
            valid, share = point.pop("valid_all"), point["valid"][f"cold_share@{SHARE_K}"]
            curve.append({"scale": scale, **point})
        else:
            valid, share = all_rows_and_share(users, items, dataset, "valid", batch_size,
                                              slot_share)
        # reaching the floor beats missing it; then the objective (or, below it, the share)
        key = (share >= min_share, valid[OBJECTIVE] if share >= min_share else share)
        if key > best[0]:
            best = (key, scale, valid, share)
    model.cold_scale.fill_(best[1])
    out: dict[str, Any] = {
        "objective": f"valid {OBJECTIVE}",
        "min_share": min_share,
        "slot_share": slot_share,
        "chosen": best[1],
        "valid": best[2],
        "valid_share": best[3],
    }
    if with_curve:
        out["curve"] = curve
        users, items = model()
        chosen = next(c for c in curve if c["scale"] == best[1])
        out["slot_curve"] = [
            # the configured share at the chosen scale is a point of the scale curve already
            {"slot_share": share, "valid": chosen["valid"], "test": chosen["test"]}
            if share == slot_share
            else {"slot_share": share,
                  **_drop_valid_all(_curve_point(users, items, dataset, batch_size, share))}
            for share in SLOT_GRID
        ]
        if isinstance(getattr(model, "new_item_fused_weight", None), torch.Tensor):
            configured = float(model.new_item_fused_weight)
            points = _buffer_curve(model, "new_item_fused_weight", FUSED_WEIGHT_GRID, dataset,
                                   batch_size, slot_share)
            model.new_item_fused_weight.fill_(configured)
            out["fused_weight_curve"] = [{"fused_weight": value, **point}
                                         for value, _, point in points]
    return out


def _buffer_curve(
    model: Recommender, buffer: str, values: tuple[float, ...] | list[float], dataset: Dataset,
    batch_size: int, slot_share: float, with_test: bool = True,
) -> list[tuple[float, dict[str, float], dict[str, Any]]]:
    """``(value, valid all-rows metrics, headlines)`` with the model's scalar ``buffer`` set to
    each value in turn; the buffer is left at the last one."""
    points = []
    for value in values:
        getattr(model, buffer).fill_(value)
        point = _curve_point(*model(), dataset, batch_size, slot_share, with_test)
        points.append((value, point.pop("valid_all"), point))
    return points


def _drop_valid_all(point: dict[str, Any]) -> dict[str, Any]:
    point.pop("valid_all")
    return point


def _curve_point(
    users: torch.Tensor, items: torch.Tensor, dataset: Dataset, batch_size: int,
    slot_share: float, with_test: bool = True,
) -> dict[str, Any]:
    """Headlines of both splits (and the whole valid all-rows metrics) for one serving rule."""
    report = warm_cold_report(users, items, dataset, "valid", batch_size, slot_share)
    test = (headline(warm_cold_report(users, items, dataset, "test", batch_size, slot_share))
            if with_test else None)
    return {"valid_all": report["all"], "valid": headline(report), "test": test}
