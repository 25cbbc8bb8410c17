"""Score many serving rules in one ranking pass: what calibration and its curves cost.

A serving *rule* is how a trained model's lists are built: the factor on its content-kNN
weight (``knn_scale``), the scale on new items' vectors (``cold_scale``), the share of every
list reserved for new items (``slot_share``, :mod:`bundle.serving_rules`) and the weight of the
fused part in new items' vectors (``fused_weight``). Scoring each rule by a full ranking costs
users x items x rules. None of them needs one, because each enters the scores linearly:

* a warm item's score does not depend on ``cold_scale``, ``slot_share`` or ``fused_weight``;
* a new item's vector is ``cold_scale`` times a vector that is affine in ``fused_weight``, so
  its order among new items does not change with the scale;
* a user's vector is affine in ``knn_scale`` (the factor multiplies one block of it), so the
  scores at any factor are ``S(0) + f (S(1) - S(0))``: two products, whatever the grid.

So one pass over the users computes, per batch, the scores at every kNN factor from two
products, the top ``k`` warm items once per factor and the top ``k`` new items once per
(factor, fused weight); every rule's list is then a merge of those two short lists under its
scale and reservation (the same list :func:`bundle.serving_rules.interleave_new_items` builds,
vectorised over users). Every rule is scored on Recall@k of all, warm and cold rows, the cold
rows among new items only, NDCG@k of all rows, and the new items' share of the slots, exactly
as :func:`training.report.warm_cold_report` scores its top ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bundle.serving_rules import reserved_slots
from models.base import Recommender
from training.data import Dataset
from training.evaluation import PAD_ITEM, top_k_columns
from training.report import SHARE_K, new_items, split_matrices


@dataclass(frozen=True)
class Rule:
    """One way to build lists; ``None`` keeps the model's current value."""

    cold_scale: float | None = None
    slot_share: float = 0.0
    knn_scale: float | None = None
    fused_weight: float | None = None


def _set(model: Recommender, name: str, value: float | None) -> None:
    if value is not None:
        getattr(model, name).fill_(value)


def _buffer(model: Recommender, name: str) -> float | None:
    value = getattr(model, name, None)
    return float(value) if isinstance(value, torch.Tensor) else None


@torch.no_grad()
def _vectors(model: Recommender, rules: Sequence[Rule], users_fn: Any
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor,
                        dict[float | None, torch.Tensor]]:
    """``(users at knn 0 or current, their change per unit of knn factor or None, items at
    the current values and new-item scale 1, {fused weight: items at it and scale 1})``."""
    saved = {name: _buffer(model, name)
             for name in ("knn_scale", "cold_scale", "new_item_fused_weight")}
    model.eval()
    try:
        _set(model, "cold_scale", 1.0 if saved["cold_scale"] is not None else None)
        users, items = model()
        users = users_fn(users)
        change = None
        if any(rule.knn_scale is not None for rule in rules):
            model.knn_scale.fill_(0.0)
            base = users_fn(model()[0])
            model.knn_scale.fill_(1.0)
            change = users_fn(model()[0]) - base
            users = base
            model.knn_scale.fill_(saved["knn_scale"])
        tables = {}
        for weight in {rule.fused_weight for rule in rules} - {None}:
            model.new_item_fused_weight.fill_(weight)
            tables[weight] = model()[1]
    finally:
        for name, value in saved.items():
            _set(model, name, value)
    return users, change, items, tables


def merge_lists(warm_ids: np.ndarray, warm_scores: np.ndarray, new_ids: np.ndarray,
                new_scores: np.ndarray, share: float, k: int) -> np.ndarray:
    """Lists [B, k] from the best warm and best new items of each row (ids [B, n], scores
    best first, ``-inf`` where there are none), new items holding ``share`` of every prefix:
    the list that ranks all of them by score (equal scores: lower id first) and then reserves
    the slots, as :func:`bundle.serving_rules.interleave_new_items` does."""
    rows = np.arange(warm_ids.shape[0])
    pad = np.full((len(rows), 1), -np.inf)
    warm_scores = np.concatenate([warm_scores, pad], 1)
    new_scores = np.concatenate([new_scores, pad], 1)
    warm_ids = np.concatenate([warm_ids, np.full_like(pad, PAD_ITEM, dtype=np.int64)], 1)
    new_ids = np.concatenate([new_ids, np.full_like(pad, PAD_ITEM, dtype=np.int64)], 1)
    out = np.full((len(rows), k), PAD_ITEM, dtype=np.int64)
    at_warm = np.zeros(len(rows), dtype=np.int64)
    at_new = np.zeros(len(rows), dtype=np.int64)
    taken_new = np.zeros(len(rows), dtype=np.int64)
    for position in range(k):
        w_score, n_score = warm_scores[rows, at_warm], new_scores[rows, at_new]
        w_id, n_id = warm_ids[rows, at_warm], new_ids[rows, at_new]
        has_new, has_warm = n_score > -np.inf, w_score > -np.inf
        ahead = (n_score > w_score) | ((n_score == w_score) & (n_id < w_id))
        due = taken_new < reserved_slots(share, position + 1)
        take_new = has_new & (due | ahead | ~has_warm)
        take_warm = ~take_new & has_warm
        out[:, position] = np.where(take_new, n_id, np.where(take_warm, w_id, PAD_ITEM))
        at_new += take_new
        at_warm += take_warm
        taken_new += take_new
    return out


class _Tally:
    """Sums of per-user Recall@k (all, warm, cold, cold among cold), NDCG@k and the share."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, values: np.ndarray) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.counts[name] = self.counts.get(name, 0) + int(values.size)

    def mean(self, name: str) -> float | None:
        return self.sums[name] / self.counts[name] if self.counts.get(name) else None


class _Batch:
    """The relevant items of a batch of users, as sorted (row, item) keys per part."""

    def __init__(self, relevant: Any, cold: np.ndarray, stride: int) -> None:
        rows = np.repeat(np.arange(relevant.shape[0]), np.diff(relevant.indptr))
        items = relevant.indices.astype(np.int64)
        self.stride, self.cold = stride, cold
        self.keys = np.sort(rows * stride + items)
        is_cold = cold[items]
        self.count = np.bincount(rows, minlength=relevant.shape[0])
        self.count_cold = np.bincount(rows[is_cold], minlength=relevant.shape[0])
        self.count_warm = self.count - self.count_cold

    def hits(self, lists: np.ndarray) -> np.ndarray:
        rows = np.arange(lists.shape[0])[:, None]
        keys = np.where(lists >= 0, rows * self.stride + lists, -1)
        at = np.clip(np.searchsorted(self.keys, keys), 0, max(len(self.keys) - 1, 0))
        return (self.keys[at] == keys) if len(self.keys) else np.zeros(keys.shape, bool)


def _tally_lists(tally: _Tally, batch: _Batch, lists: np.ndarray, k: int) -> None:
    hit = batch.hits(lists)
    listed_cold = np.where(lists >= 0, batch.cold[np.maximum(lists, 0)], False)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    have = batch.count > 0
    tally.add("all", hit.sum(1)[have] / batch.count[have])
    ideal = np.cumsum(discount)[np.minimum(batch.count[have], k) - 1]
    tally.add("ndcg", (hit * discount).sum(1)[have] / ideal)
    for part, count, mask in (("warm", batch.count_warm, ~listed_cold),
                              ("cold", batch.count_cold, listed_cold)):
        have = count > 0
        tally.add(part, (hit & mask).sum(1)[have] / count[have])
    listed = lists >= 0
    tally.sums["share"] = tally.sums.get("share", 0.0) + float(listed_cold[:, :SHARE_K].sum())
    tally.counts["share"] = tally.counts.get("share", 0) + int(listed[:, :SHARE_K].sum())


def _top(block: torch.Tensor, columns: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(item ids, scores)`` [B, min(k, n)] of the best columns of ``block`` [B, n] (whose
    columns are the item ids ``columns``, ascending), best first, equal scores lower id
    first; masked (``-inf``) entries get id -1."""
    if columns.size == 0:
        return (np.zeros((block.shape[0], 0), dtype=np.int64), np.zeros((block.shape[0], 0)))
    index = top_k_columns(block, min(k, block.shape[1]))
    values = torch.gather(block, 1, index).cpu().numpy().astype(np.float64)
    ids = columns[index.cpu().numpy()]
    return np.where(values > -np.inf, ids, PAD_ITEM), values


@torch.no_grad()
def score_rules(
    model: Recommender,
    dataset: Dataset,
    split: str,
    rules: Sequence[Rule],
    *,
    k: int = SHARE_K,
    batch_size: int = 2048,
    users_fn: Any = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Per rule, ``{"all", "warm", "cold", "cold_among_cold", "cold_share@20"}`` (Recall@k of
    each part, None where a part has no rows, and the share) and ``"all_metrics"`` ({recall@k,
    ndcg@k} of all rows), from one pass over the split's users (module docstring). The
    model's buffers are left as they were. ``users_fn`` maps the model's user vectors to the
    ones to rank for (default: themselves)."""
    relevant, seen = split_matrices(dataset, split)
    evaluated = np.flatnonzero(np.diff(relevant.indptr))
    cold = new_items(dataset)
    warm_columns, new_columns = np.flatnonzero(~cold), np.flatnonzero(cold)
    users, change, items, tables = _vectors(model, rules, users_fn or (lambda u: u))
    current_scale = _buffer(model, "cold_scale") or 1.0
    current_knn = _buffer(model, "knn_scale")
    items_t = items.T
    warm_index = torch.as_tensor(warm_columns, device=items.device)
    new_index = torch.as_tensor(new_columns, device=items.device)
    tallies = [_Tally() for _ in rules]
    factors = sorted({rule.knn_scale for rule in rules}, key=lambda f: (f is None, f or 0.0))
    weights = {rule.fused_weight for rule in rules}
    starts = range(0, len(evaluated), batch_size)
    for start in tqdm(starts, desc=f"{split} rules", unit="batch", disable=not progress,
                      leave=False):
        rows = evaluated[start : start + batch_size]
        index = torch.as_tensor(rows, device=users.device)
        base = users[index] @ items_t
        delta = None if change is None else change[index] @ items_t
        block_seen = seen[rows]
        mask_rows = np.repeat(np.arange(len(rows)), np.diff(block_seen.indptr))
        flat = torch.as_tensor(mask_rows * items.shape[0] + block_seen.indices,
                               device=base.device)
        batch = _Batch(relevant[rows], cold, items.shape[0] + 1)
        for factor in factors:
            # the rule's factor, or the model's own when the rule keeps it
            value = current_knn if factor is None else factor
            scores = base.clone() if delta is None else base + value * delta
            scores.view(-1).index_fill_(0, flat, float("-inf"))
            warm = _top(scores[:, warm_index], warm_columns, k)
            current_new = scores[:, new_index]
            user_rows = users[index] if change is None else users[index] + value * change[index]
            new_lists = {}
            for weight in weights:
                block = current_new
                if weight is not None:  # only the new items' columns change with it
                    fresh = user_rows @ tables[weight][new_index].T
                    block = torch.where(current_new == float("-inf"), current_new, fresh)
                new_lists[weight] = _top(block, new_columns, k)
            for tally, rule in zip(tallies, rules, strict=True):
                if rule.knn_scale != factor:
                    continue
                new_ids, new_scores = new_lists[rule.fused_weight]
                scale = current_scale if rule.cold_scale is None else rule.cold_scale
                lists = merge_lists(*warm, new_ids, scale * new_scores, rule.slot_share, k)
                _tally_lists(tally, batch, lists, k)
                among = batch.hits(new_ids)
                have = batch.count_cold > 0
                tally.add("cold_among_cold", among.sum(1)[have] / batch.count_cold[have])
    out = []
    for tally in tallies:
        out.append({
            "all": tally.mean("all"),
            "warm": tally.mean("warm"),
            "cold": tally.mean("cold"),
            "cold_among_cold": tally.mean("cold_among_cold"),
            f"cold_share@{SHARE_K}": tally.mean("share") or 0.0,
            "all_metrics": {f"recall@{k}": tally.mean("all"), f"ndcg@{k}": tally.mean("ndcg")},
        })
    return out
