"""Choose how strongly new items compete with warm ones, on validation.

A model with a new-item path exposes a ``cold_scale`` buffer: the factor on the content half of
items without training interactions (see :mod:`models.metammf_lightgcn`). Served at 1, new
items rarely enter a top-20 because popular warm items hold the top slots; served too high they
crowd warm items out. Which trade-off is right is a product decision, so it is *chosen on
validation* (all-row Recall@20, the number a user of the service feels) over a fixed grid,
stored in the model's weights (and so in the bundle and its exported item tower, which the
service runs unchanged), and the whole curve is kept for the report.
"""

from __future__ import annotations

from typing import Any

import torch

from models.base import Recommender
from training.data import Dataset
from training.report import headline, warm_cold_report

SCALE_GRID: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
OBJECTIVE = "recall@20"


def supports_calibration(model: Recommender) -> bool:
    return isinstance(getattr(model, "cold_scale", None), torch.Tensor)


@torch.no_grad()
def calibrate_cold_scale(
    model: Recommender,
    dataset: Dataset,
    grid: tuple[float, ...] = SCALE_GRID,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """Set ``model.cold_scale`` to the grid value with the best validation Recall@20.

    Returns ``{"chosen": scale, "curve": [{"scale", "valid": headline, "test": headline}]}``;
    the test column is reported, never used to choose. Ties keep the smaller scale.
    """
    if not supports_calibration(model):
        raise TypeError(f"{type(model).__name__} has no cold_scale to calibrate")
    model.eval()
    curve, best = [], (-1.0, None)
    for scale in grid:
        model.cold_scale.fill_(scale)
        users, items = model()
        valid = warm_cold_report(users, items, dataset, "valid", batch_size)
        test = warm_cold_report(users, items, dataset, "test", batch_size)
        curve.append({"scale": scale, "valid": headline(valid), "test": headline(test)})
        if valid["all"][OBJECTIVE] > best[0]:
            best = (valid["all"][OBJECTIVE], scale)
    model.cold_scale.fill_(best[1])
    return {"objective": f"valid {OBJECTIVE}", "chosen": best[1], "curve": curve}
