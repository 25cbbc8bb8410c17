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
from training.report import SHARE_K
from training.sweep import Rule, score_rules

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


def _point(result: dict[str, Any]) -> dict[str, Any]:
    """A curve point's headline (the parts and the share) without the all-row metrics."""
    return {key: value for key, value in result.items() if key != "all_metrics"}


@torch.no_grad()
def calibrate_knn_scale(
    model: Recommender,
    dataset: Dataset,
    grid: tuple[float, ...] = KNN_SCALE_GRID,
    batch_size: int = 2048,
    *,
    slot_share: float = 0.0,
    with_test: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Set ``model.knn_scale`` (the factor on the content-kNN part of the user vectors, see
    :mod:`models.metammf_lightgcn`) to the grid value with the best validation Recall@20 on
    lists as served; ties keep the value closest to 1 (the trained weight). One ranking
    pass per split scores every value (:mod:`training.sweep`).

    Returns ``{"objective", "chosen", "curve": [{"knn_scale", "valid", "test"}]}``, the test
    column reported, never used to choose (without ``with_test``: no curve).
    """
    if not supports_knn_scale(model):
        raise TypeError(f"{type(model).__name__} has no knn_scale to calibrate")
    model.eval()
    # closest to 1 first, so that a tie keeps the factor nearer the trained weight
    order = sorted(grid, key=lambda f: abs(math.log(f)))
    rules = [Rule(knn_scale=f, slot_share=slot_share) for f in order]
    valid = score_rules(model, dataset, "valid", rules, batch_size=batch_size,
                        progress=progress)
    best = order[max(range(len(order)), key=lambda n: valid[n]["all"])]  # first of ties
    model.knn_scale.fill_(best)
    curve: list[dict[str, Any]] = []
    if with_test:
        test = score_rules(model, dataset, "test", rules, batch_size=batch_size,
                           progress=progress)
        curve = sorted(({"knn_scale": f, "valid": _point(v), "test": _point(t)}
                        for f, v, t in zip(order, valid, test, strict=True)),
                       key=lambda point: point["knn_scale"])
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
    slot_shares: tuple[float, ...] | None = None,
    with_curve: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Set ``model.cold_scale`` to the grid value with the best validation Recall@20 among
    those that give new items at least ``min_share`` of the validation top-20 slots (an
    exposure floor; 0 = none). When no scale reaches the floor, the one closest to it wins.
    With ``slot_shares`` the reserved share is chosen too, jointly with the scale, among
    those values (the configured ``slot_share`` is then their floor: smaller ones are
    dropped); else lists reserve ``slot_share`` throughout. Every (scale, share) is scored
    in one ranking pass per split (:mod:`training.sweep`).

    Returns ``{"chosen", "slot_share" (the chosen share), "valid": {recall@20, ndcg@20} at the
    choice, "valid_share"}`` and, with ``with_curve``, ``"curve": [{"scale", "valid":
    headline, "test": headline}]`` (the warm/cold trade-off per scale, at the chosen share),
    ``"slot_curve": [{"slot_share", "valid", "test"}]`` (per reserved share of
    :data:`SLOT_GRID`, at the chosen scale) and, for models with a ``new_item_fused_weight``,
    ``"fused_weight_curve"`` (per weight, at the chosen scale and share). Ties keep the
    smaller scale, then the smaller share.
    """
    if not supports_calibration(model):
        raise TypeError(f"{type(model).__name__} has no cold_scale to calibrate")
    model.eval()
    shares = ((slot_share,) if slot_shares is None
              else tuple(s for s in sorted(slot_shares) if s >= slot_share) or (slot_share,))
    candidates = [Rule(cold_scale=scale, slot_share=share) for share in shares for scale in grid]
    fused = isinstance(getattr(model, "new_item_fused_weight", None), torch.Tensor)
    rules = list(candidates)
    if with_curve:  # the valid side of every curve point the choice may need, in one pass
        rules += [Rule(cold_scale=scale, slot_share=share) for share in SLOT_GRID
                  for scale in grid if share not in shares]
        if fused:
            rules += [Rule(cold_scale=rule.cold_scale, slot_share=rule.slot_share,
                           fused_weight=weight)
                      for rule in candidates for weight in FUSED_WEIGHT_GRID]
    valid = dict(zip(rules, score_rules(model, dataset, "valid", rules, batch_size=batch_size,
                                        progress=progress), strict=True))

    def key(rule: Rule) -> tuple[bool, float]:
        # reaching the floor beats missing it; then the objective (or, below it, the share)
        share = valid[rule][f"cold_share@{SHARE_K}"]
        return share >= min_share, valid[rule]["all"] if share >= min_share else share

    best = max(candidates, key=key)  # max keeps the first of ties: smaller share, scale
    model.cold_scale.fill_(best.cold_scale)
    out: dict[str, Any] = {
        "objective": f"valid {OBJECTIVE}",
        "min_share": min_share,
        "slot_share": best.slot_share,
        "slot_floor": slot_share,
        "chosen": best.cold_scale,
        "valid": valid[best]["all_metrics"],
        "valid_share": valid[best][f"cold_share@{SHARE_K}"],
    }
    if with_curve:
        curves = {
            "curve": [("scale", scale, Rule(cold_scale=scale, slot_share=best.slot_share))
                      for scale in grid],
            "slot_curve": [("slot_share", share, Rule(cold_scale=best.cold_scale,
                                                      slot_share=share))
                           for share in SLOT_GRID],
        }
        if fused:
            curves["fused_weight_curve"] = [
                ("fused_weight", weight, Rule(cold_scale=best.cold_scale,
                                              slot_share=best.slot_share, fused_weight=weight))
                for weight in FUSED_WEIGHT_GRID]
        needed = list(dict.fromkeys(rule for points in curves.values() for *_, rule in points))
        test = dict(zip(needed, score_rules(model, dataset, "test", needed,
                                            batch_size=batch_size, progress=progress),
                        strict=True))
        for name, points in curves.items():
            out[name] = [{field: value, "valid": _point(valid[rule]), "test": _point(test[rule])}
                         for field, value, rule in points]
    return out
