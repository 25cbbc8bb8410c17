"""Score many serving rules in one ranking pass: what choosing them and reporting them costs.

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
scale and reservation (the list :func:`bundle.serving_rules.interleave_new_items` builds),
vectorised over users and rules. Every rule gets the whole report of
:func:`training.report.warm_cold_report` (all, warm and cold rows, cold rows among new items
only, the new items' share of the top-20 slots), equal to it (tested rule by rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bundle.serving_rules import reserved_slots
from models.base import Recommender
from training.data import Dataset
from training.evaluation import DEFAULT_KS, PAD_ITEM, top_k_columns
from training.report import SHARE_K, new_items, split_matrices

METRICS = ("recall", "ndcg", "precision", "hit")


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


def buffer_value(model: Recommender, name: str) -> float | None:
    """A model's scalar buffer (``knn_scale``, ``cold_scale``, ...), or None without one."""
    value = getattr(model, name, None)
    return float(value) if isinstance(value, torch.Tensor) else None


@torch.no_grad()
def _vectors(model: Recommender, rules: Sequence[Rule],
             users_fn: Callable[[torch.Tensor], torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor,
                        dict[float, torch.Tensor]]:
    """``(users at kNN factor 0, or as they are, their change per unit of factor or None,
    items at the current values and new-item scale 1, {fused weight: items at it, scale 1})``."""
    saved = {name: buffer_value(model, name)
             for name in ("knn_scale", "cold_scale", "new_item_fused_weight")}
    model.eval()
    try:
        _set(model, "cold_scale", 1.0 if saved["cold_scale"] is not None else None)
        users, items = model()
        users = users_fn(users)
        change = None
        if saved["knn_scale"] is not None and any(r.knn_scale is not None for r in rules):
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
                new_scores: np.ndarray, scales: np.ndarray, shares: np.ndarray,
                k: int) -> np.ndarray:
    """Lists [R, B, k], one per rule ``r`` (new items' scores times ``scales[r]``, new items
    holding ``shares[r]`` of every prefix), from the best warm and best new items of each row
    (ids [B, n], scores best first, ``-inf`` where there are none): the list that ranks all of
    them by score (equal scores: lower id first) and then reserves the slots, as
    :func:`bundle.serving_rules.interleave_new_items` does."""
    rules, rows = len(scales), warm_ids.shape[0]
    pad = np.full((rows, 1), -np.inf)
    warm_scores = np.concatenate([warm_scores, pad], 1)
    new_scores = np.concatenate([new_scores, pad], 1)
    warm_ids = np.concatenate([warm_ids, np.full((rows, 1), PAD_ITEM, dtype=np.int64)], 1)
    new_ids = np.concatenate([new_ids, np.full((rows, 1), PAD_ITEM, dtype=np.int64)], 1)
    row = np.broadcast_to(np.arange(rows), (rules, rows))
    scale = np.asarray(scales, dtype=np.float64)[:, None]
    quota = np.array([[reserved_slots(share, p + 1) for share in shares] for p in range(k)])
    out = np.full((rules, rows, k), PAD_ITEM, dtype=np.int64)
    at_warm = np.zeros((rules, rows), dtype=np.int64)
    at_new = np.zeros((rules, rows), dtype=np.int64)
    for position in range(k):
        w_score, w_id = warm_scores[row, at_warm], warm_ids[row, at_warm]
        n_score, n_id = scale * new_scores[row, at_new], new_ids[row, at_new]
        has_new, has_warm = n_score > -np.inf, w_score > -np.inf
        ahead = (n_score > w_score) | ((n_score == w_score) & (n_id < w_id))
        due = at_new < quota[position][:, None]  # every new item taken counts to the quota
        take_new = has_new & (due | ahead | ~has_warm)
        take_warm = ~take_new & has_warm
        out[:, :, position] = np.where(take_new, n_id, np.where(take_warm, w_id, PAD_ITEM))
        at_new += take_new
        at_warm += take_warm
    return out


class _Part:
    """Sums over users of every metric at every cut-off, for one part of R rules' reports."""

    def __init__(self, rules: int, ks: Sequence[int]) -> None:
        self.ks = list(ks)
        self.sums = np.zeros((rules, len(METRICS), len(self.ks)))
        self.users = np.zeros(rules, dtype=np.int64)

    def add(self, rules: np.ndarray, hit: np.ndarray, relevant: np.ndarray) -> None:
        """``hit`` [len(rules), B, K] of B users with ``relevant`` [B] > 0 relevant items."""
        if hit.shape[1] == 0:
            return
        discount = 1.0 / np.log2(np.arange(2, hit.shape[2] + 2))
        found = np.cumsum(hit, axis=2)
        gain = np.cumsum(hit * discount, axis=2)
        ideal = np.cumsum(discount)
        for index, k in enumerate(self.ks):
            hits = found[:, :, k - 1]
            self.sums[rules, 0, index] += (hits / relevant).sum(1)
            self.sums[rules, 1, index] += (gain[:, :, k - 1]
                                           / ideal[np.minimum(relevant, k) - 1]).sum(1)
            self.sums[rules, 2, index] += (hits / k).sum(1)
            self.sums[rules, 3, index] += (hits > 0).sum(1)
        self.users[rules] += hit.shape[1]

    def metrics(self, rule: int) -> dict[str, float] | None:
        users = int(self.users[rule])
        if users == 0:
            return None
        out = {f"{metric}@{k}": float(self.sums[rule, m, i] / users)
               for m, metric in enumerate(METRICS) for i, k in enumerate(self.ks)}
        return {**out, "users": users}


class _Batch:
    """The relevant items of a batch of users, as sorted (row, item) keys."""

    def __init__(self, relevant: Any, cold: np.ndarray) -> None:
        rows = np.repeat(np.arange(relevant.shape[0]), np.diff(relevant.indptr))
        items = relevant.indices.astype(np.int64)
        self.stride, self.cold = len(cold) + 1, cold
        self.keys = np.sort(rows * self.stride + items)
        is_cold = cold[items]
        self.count = np.bincount(rows, minlength=relevant.shape[0])
        self.count_cold = np.bincount(rows[is_cold], minlength=relevant.shape[0])
        self.count_warm = self.count - self.count_cold

    def hits(self, lists: np.ndarray) -> np.ndarray:
        """bool [..., B, K]: is each listed item relevant to its row's user."""
        rows = np.arange(lists.shape[-2])[:, None]
        keys = np.where(lists >= 0, rows * self.stride + lists, -1)
        if not len(self.keys):
            return np.zeros(keys.shape, dtype=bool)
        at = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        return self.keys[at] == keys


class _Report:
    """The running sums of :func:`training.report.warm_cold_report` for R rules."""

    def __init__(self, rules: int, ks: Sequence[int]) -> None:
        self.parts = {part: _Part(rules, ks)
                      for part in ("all", "warm", "cold", "cold_among_cold")}
        self.listed = np.zeros(rules)
        self.listed_new = np.zeros(rules)

    def add(self, batch: _Batch, rules: np.ndarray, lists: np.ndarray,
            among: np.ndarray) -> None:
        """``lists`` [len(rules), B, K] of the rules ``rules`` (indices); ``among`` [B, K]
        the ranking among new items those rules share."""
        hit = batch.hits(lists).astype(np.float64)
        listed_new = np.where(lists >= 0, batch.cold[np.maximum(lists, 0)], False)
        for part, count, keep in (("all", batch.count, None),
                                  ("warm", batch.count_warm, ~listed_new),
                                  ("cold", batch.count_cold, listed_new)):
            have = count > 0
            part_hit = hit if keep is None else hit * keep
            self.parts[part].add(rules, part_hit[:, have], count[have])
        have = batch.count_cold > 0
        among_hit = batch.hits(among)[have].astype(np.float64)
        self.parts["cold_among_cold"].add(
            rules, np.broadcast_to(among_hit, (len(rules),) + among_hit.shape),
            batch.count_cold[have])
        self.listed[rules] += (lists[:, :, :SHARE_K] >= 0).sum((1, 2))
        self.listed_new[rules] += listed_new[:, :, :SHARE_K].sum((1, 2))

    def report(self, rule: int, rows: dict[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = {"all": self.parts["all"].metrics(rule), "rows": rows}
        for part in ("warm", "cold", "cold_among_cold"):
            if (metrics := self.parts[part].metrics(rule)) is not None:
                out[part] = metrics
        out[f"cold_share@{SHARE_K}"] = (float(self.listed_new[rule] / self.listed[rule])
                                        if self.listed[rule] else 0.0)
        return out


def _top(block: torch.Tensor, columns: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(item ids, scores)`` [B, k] of the best columns of ``block`` [B, n] (whose columns
    are the item ids ``columns``, ascending), best first, equal scores lower id first;
    masked (``-inf``) entries, and places past the n columns, get id -1 and ``-inf``."""
    ids = np.full((block.shape[0], k), PAD_ITEM, dtype=np.int64)
    values = np.full((block.shape[0], k), -np.inf)
    if columns.size:
        index = top_k_columns(block, min(k, block.shape[1]))
        found = torch.gather(block, 1, index).cpu().numpy().astype(np.float64)
        values[:, : found.shape[1]] = found
        ids[:, : found.shape[1]] = np.where(found > -np.inf, columns[index.cpu().numpy()],
                                            PAD_ITEM)
    return ids, values


@torch.no_grad()
def score_rules(
    model: Recommender,
    dataset: Dataset,
    split: str,
    rules: Sequence[Rule],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 2048,
    users_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Per rule, the report :func:`training.report.warm_cold_report` gives for lists built
    that way, from one pass over the split's users (module docstring). The model's buffers are
    left as they were. ``users_fn`` maps the model's user vectors to the ones to rank for
    (e.g. the users as served); default: themselves."""
    relevant, seen = split_matrices(dataset, split)
    evaluated = np.flatnonzero(np.diff(relevant.indptr))
    cold = new_items(dataset)
    warm_columns, new_columns = np.flatnonzero(~cold), np.flatnonzero(cold)
    users, change, items, tables = _vectors(model, rules, users_fn or (lambda u: u))
    current = {"cold_scale": buffer_value(model, "cold_scale") or 1.0,
               "knn_scale": buffer_value(model, "knn_scale")}
    # warm and new items scored apart: no gathers of the wide score blocks, and each part's
    # seen items masked once (-inf stays -inf at every factor: the change is finite)
    parts = {"warm": warm_columns, "new": new_columns}
    tables_t = {name: items[torch.as_tensor(cols, device=items.device)].T
                for name, cols in parts.items()}
    position = np.zeros(len(cold), dtype=np.int64)
    for cols in parts.values():
        position[cols] = np.arange(len(cols))
    k = max(ks)
    rows_of = {"warm": int(relevant[:, warm_columns].nnz),
               "cold": int(relevant[:, new_columns].nnz)}
    sums = _Report(len(rules), ks)
    factors = sorted({rule.knn_scale for rule in rules}, key=lambda f: (f is None, f or 0.0))
    starts = range(0, len(evaluated), batch_size)
    for start in tqdm(starts, desc=f"scoring {split} ({len(rules)} rules)", unit="batch",
                      disable=not progress, leave=False):
        rows = evaluated[start : start + batch_size]
        index = torch.as_tensor(rows, device=users.device)
        block_seen = seen[rows]
        seen_rows = np.repeat(np.arange(len(rows)), np.diff(block_seen.indptr))
        seen_new = cold[block_seen.indices]
        base, delta = {}, {}
        for name, table in tables_t.items():
            base[name] = users[index] @ table
            delta[name] = None if change is None else change[index] @ table
            mine = seen_new if name == "new" else ~seen_new
            flat = seen_rows[mine] * table.shape[1] + position[block_seen.indices[mine]]
            base[name].view(-1).index_fill_(0, torch.as_tensor(flat, device=base[name].device),
                                            float("-inf"))
        batch = _Batch(relevant[rows], cold)
        for factor in factors:
            # the rule's factor, or the model's own when the rule keeps it
            value = current["knn_scale"] if factor is None else factor
            scores = {name: base[name] if delta[name] is None
                      else torch.add(base[name], delta[name], alpha=value) for name in parts}
            warm = _top(scores["warm"], warm_columns, k)
            current_new = scores["new"]
            user_rows = users[index] if change is None else users[index] + value * change[index]
            for weight in {rule.fused_weight for rule in rules if rule.knn_scale == factor}:
                block = current_new
                if weight is not None:  # only the new items' columns change with it
                    fresh = user_rows @ tables[weight][torch.as_tensor(new_columns)].T
                    block = torch.where(current_new == float("-inf"), current_new, fresh)
                new_ids, new_scores = _top(block, new_columns, k)
                chosen = np.array([n for n, rule in enumerate(rules)
                                   if rule.knn_scale == factor and rule.fused_weight == weight])
                scales = [current["cold_scale"] if rules[n].cold_scale is None
                          else rules[n].cold_scale for n in chosen]
                lists = merge_lists(*warm, new_ids, new_scores, np.array(scales),
                                    np.array([rules[n].slot_share for n in chosen]), k)
                sums.add(batch, chosen, lists, new_ids)
    return [sums.report(n, rows_of) for n in range(len(rules))]
