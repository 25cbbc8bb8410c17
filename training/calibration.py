"""Choose how a trained model's lists are built (its serving rules), on validation.

A model with a new-item path exposes a ``cold_scale`` buffer: the factor on the vectors of
items without training interactions (see :mod:`models.fusion_lightgcn`). Served at 1, new items
may never enter a top-20 (popular warm items hold the top slots) or may crowd warm items out,
depending on how training left the scale of their vectors. Which trade-off is right is a product
decision, so it is *chosen on validation* over a fixed grid, with the number a user of the
service feels as the objective (all-row Recall@20), stored in the model's weights (and so in the
bundle and its exported item tower, which the service runs unchanged). A model with a
content-kNN part also exposes ``knn_scale``, a factor on its learned kNN weight chosen the same
way, and the reserved share of every list for new items (:mod:`bundle.serving_rules`) can be
chosen too, above a floor that is a business rule (``TrainConfig.choose_new_item_slots``).

The trainer scores every epoch at its own best new-item scale of :data:`EPOCH_GRID`
(:func:`epoch_validation`), so early stopping compares epochs at their best (an uncalibrated
epoch can look bad only because its new items flood the lists). After training
(:func:`choose_serving_rules`), one ranking pass over the validation users scores every
candidate rule at once (:mod:`training.sweep`), and the choice is made in the order it always
was: first the kNN factor, at the new-item scale the best epoch had and the floor share; then
the scale (and the share, when it is chosen) at that factor. One pass over the test users then
scores the chosen rule (the test report) and the points of the trade-off curves kept for the
report. The test column is reported, never used to choose.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from models.base import Recommender
from training.data import Dataset
from training.evaluation import SELECTION_METRIC
from training.report import SHARE_K, headline
from training.sweep import Rule, buffer_value, score_rules

#: The final choice (and the reported trade-off curve) is made on this grid ...
SCALE_GRID: tuple[float, ...] = (
    0.1, 0.25, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0
)
#: ... and every epoch's early-stopping score on this coarse one (all in one pass).
EPOCH_GRID: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 2.0)
#: Reserved new-item shares reported beside the scale curve, and the ones a chosen share
#: comes from (those at or above the configured floor).
SLOT_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2)
#: Factors on the learned content-kNN weight gamma, chosen on validation after training (32
#: and 64 since MicroLens-50K's title fields chose the largest, 16, in every run).
KNN_SCALE_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
#: Weights of the fused part in new items' vectors reported beside them (the evidence for the
#: configured ``new_item_fused_weight``, which is a design decision, not chosen here).
FUSED_WEIGHT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
OBJECTIVE = SELECTION_METRIC


def supports_calibration(model: Recommender) -> bool:
    return isinstance(getattr(model, "cold_scale", None), torch.Tensor)


def supports_knn_scale(model: Recommender) -> bool:
    return isinstance(getattr(model, "knn_scale", None), torch.Tensor)


def _objective(report: dict[str, Any]) -> float:
    return float(report["all"][OBJECTIVE])


def _share(report: dict[str, Any]) -> float:
    return float(report[f"cold_share@{SHARE_K}"])


def _best(rules: list[Rule], reports: dict[Rule, dict[str, Any]], min_share: float) -> Rule:
    """The rule with the best objective among those that give new items at least
    ``min_share`` of the top-20 slots (if none does, the one closest to it); the first of
    ties."""
    def key(rule: Rule) -> tuple[bool, float]:
        share = _share(reports[rule])
        reached = share >= min_share
        return reached, _objective(reports[rule]) if reached else share

    return max(rules, key=key)


@torch.no_grad()
def epoch_validation(model: Recommender, dataset: Dataset, *, slot_share: float,
                     min_share: float = 0.0, batch_size: int = 2048) -> dict[str, float]:
    """All-row validation metrics at the best new-item scale of :data:`EPOCH_GRID` (set in
    the model), every scale scored in one ranking pass."""
    if not supports_calibration(model):
        raise TypeError(f"{type(model).__name__} has no cold_scale to calibrate")
    rules = [Rule(cold_scale=scale, slot_share=slot_share) for scale in EPOCH_GRID]
    reports = dict(zip(rules, score_rules(model, dataset, "valid", rules, batch_size=batch_size),
                       strict=True))
    best = _best(rules, reports, min_share)
    model.cold_scale.fill_(best.cold_scale)
    return reports[best]["all"]


@dataclass
class ServingChoice:
    """What :func:`choose_serving_rules` chose and scored."""

    slot_share: float
    valid_report: dict[str, Any]
    test_report: dict[str, Any]
    knn: dict[str, Any] | None  # {"objective", "chosen", "curve"}
    cold: dict[str, Any] | None  # {"chosen", "slot_share", ..., "curve", "slot_curve", ...}


@torch.no_grad()
def choose_serving_rules(
    model: Recommender,
    dataset: Dataset,
    *,
    slot_share: float = 0.0,
    choose_slots: bool = False,
    min_share: float = 0.0,
    with_curves: bool = True,
    batch_size: int = 2048,
    test_users: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> ServingChoice:
    """Set the model's kNN factor and new-item scale (and choose the reserved share when
    ``choose_slots``: among :data:`SLOT_GRID`'s shares at or above ``slot_share``, the
    floor) on validation, one pass over the validation users and one over the test users
    (module docstring). ``min_share`` is an exposure floor on the scale: the least share of
    validation top-20 slots new items must hold. ``test_users`` maps the model's user vectors
    to the test protocol's (e.g. a sequence model's users after the validation item).

    The curves (``with_curves``): per kNN factor (at the best epoch's scale and the floor),
    per scale (at the chosen factor and share), per reserved share of :data:`SLOT_GRID` (at
    the chosen factor and scale) and per fused weight of :data:`FUSED_WEIGHT_GRID` (at the
    chosen rule; test only: scoring it on validation would need it at every candidate), each
    point ``{"valid": headline, "test": headline}``.
    """
    has_knn, has_scale = supports_knn_scale(model), supports_calibration(model)
    if not (has_knn or has_scale):
        raise TypeError(f"{type(model).__name__} has no serving rule to choose")
    model.eval()
    # ties keep the kNN factor closest to 1 (the trained weight), the smaller scale and share
    factors: list[float | None] = (sorted(KNN_SCALE_GRID, key=lambda f: abs(math.log(f)))
                                   if has_knn else [None])
    epoch_scale = buffer_value(model, "cold_scale")
    scales: list[float | None] = list(SCALE_GRID) if has_scale else [None]
    if epoch_scale is not None and epoch_scale not in scales:
        scales.append(epoch_scale)
    shares = sorted({slot_share, *(s for s in SLOT_GRID if s >= slot_share and choose_slots)})
    valid_shares = sorted(set(shares) | (set(SLOT_GRID) if with_curves and has_scale else set()))
    rules = [Rule(cold_scale=s, slot_share=r, knn_scale=f)
             for f in factors for r in valid_shares for s in scales]
    valid = dict(zip(rules, score_rules(model, dataset, "valid", rules, batch_size=batch_size,
                                        progress=progress), strict=True))

    # the kNN factor at the best epoch's scale and the floor share ...
    knn_rules = [Rule(cold_scale=epoch_scale, slot_share=slot_share, knn_scale=f)
                 for f in factors]
    factor = _best(knn_rules, valid, 0.0).knn_scale
    # ... then the scale and share at that factor
    candidates = [Rule(cold_scale=s, slot_share=r, knn_scale=factor)
                  for r in shares for s in (SCALE_GRID if has_scale else [None])]
    chosen = _best(candidates, valid, min_share)
    if has_knn:
        model.knn_scale.fill_(factor)
    if has_scale:
        model.cold_scale.fill_(chosen.cold_scale)
    # the test pass: the chosen rule (the test report) and the curves' points
    curves: dict[str, list[tuple[str, float, Rule]]] = {}
    if with_curves:
        if has_knn:
            curves["knn"] = [("knn_scale", f, rule) for f, rule in zip(factors, knn_rules,
                                                                      strict=True)]
        if has_scale:
            curves["curve"] = [("scale", s, Rule(cold_scale=s, slot_share=chosen.slot_share,
                                                 knn_scale=factor)) for s in SCALE_GRID]
            curves["slot_curve"] = [("slot_share", r, Rule(cold_scale=chosen.cold_scale,
                                                           slot_share=r, knn_scale=factor))
                                    for r in SLOT_GRID]
        if has_scale and isinstance(getattr(model, "new_item_fused_weight", None),
                                    torch.Tensor):
            curves["fused_weight_curve"] = [
                ("fused_weight", w, Rule(cold_scale=chosen.cold_scale,
                                         slot_share=chosen.slot_share, knn_scale=factor,
                                         fused_weight=w)) for w in FUSED_WEIGHT_GRID]
    needed = list(dict.fromkeys([chosen, *(rule for points in curves.values()
                                           for *_, rule in points)]))
    test = dict(zip(needed, score_rules(model, dataset, "test", needed, batch_size=batch_size,
                                        users_fn=test_users, progress=progress), strict=True))

    def points(name: str) -> list[dict[str, Any]]:
        return [{field: value,
                 "valid": headline(valid[rule]) if rule in valid else None,
                 "test": headline(test[rule])} for field, value, rule in curves.get(name, [])]

    knn = None
    if has_knn:
        knn = {"objective": f"valid {OBJECTIVE}", "chosen": factor,
               "curve": sorted(points("knn"), key=lambda point: point["knn_scale"])}
    cold = None
    if has_scale:
        cold = {"objective": f"valid {OBJECTIVE}", "min_share": min_share,
                "slot_share": chosen.slot_share, "slot_floor": slot_share,
                "chosen": chosen.cold_scale, "valid": valid[chosen]["all"],
                "valid_share": _share(valid[chosen])}
        if with_curves:
            cold.update({name: points(name) for name in ("curve", "slot_curve",
                                                         "fused_weight_curve")
                         if name in curves})
    return ServingChoice(slot_share=chosen.slot_share, valid_report=valid[chosen],
                         test_report=test[chosen], knn=knn, cold=cold)
