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
"""

from __future__ import annotations

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
OBJECTIVE = "recall@20"


def supports_calibration(model: Recommender) -> bool:
    return isinstance(getattr(model, "cold_scale", None), torch.Tensor)


@torch.no_grad()
def calibrate_cold_scale(
    model: Recommender,
    dataset: Dataset,
    grid: tuple[float, ...] = SCALE_GRID,
    batch_size: int = 2048,
    *,
    min_share: float = 0.0,
    with_curve: bool = False,
) -> dict[str, Any]:
    """Set ``model.cold_scale`` to the grid value with the best validation Recall@20 among
    those that give new items at least ``min_share`` of the validation top-20 slots (an
    exposure floor; 0 = none). When no scale reaches the floor, the one closest to it wins.

    Returns ``{"chosen", "valid": metrics at the chosen scale, "valid_share"}`` and, with
    ``with_curve``, ``"curve": [{"scale", "valid": headline, "test": headline}]`` (the warm/cold
    trade-off per scale). Ties keep the smaller scale.
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
            report = warm_cold_report(users, items, dataset, "valid", batch_size)
            valid, share = report["all"], report[f"cold_share@{SHARE_K}"]
            curve.append({
                "scale": scale,
                "valid": headline(report),
                "test": headline(warm_cold_report(users, items, dataset, "test", batch_size)),
            })
        else:
            valid, share = all_rows_and_share(users, items, dataset, "valid", batch_size)
        # reaching the floor beats missing it; then the objective (or, below it, the share)
        key = (share >= min_share, valid[OBJECTIVE] if share >= min_share else share)
        if key > best[0]:
            best = (key, scale, valid, share)
    model.cold_scale.fill_(best[1])
    out: dict[str, Any] = {
        "objective": f"valid {OBJECTIVE}",
        "min_share": min_share,
        "chosen": best[1],
        "valid": best[2],
        "valid_share": best[3],
    }
    if with_curve:
        out["curve"] = curve
    return out
