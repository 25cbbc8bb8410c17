"""Evaluation that shows new items: every split scored on all, warm and cold rows.

A test (or validation) row is *warm* when its item has training interactions and *cold* when
it has none: held-out items of the cold-start protocol, or items nobody interacted with in the
training split (465 on TikTok, 7.3% of its test rows). ID-only models cannot rank cold items,
so a single all-rows number hides whether the content counts. :func:`warm_cold_report` gives:

* ``all``: all-item ranking metrics on every row (the papers' number);
* ``warm``: the same ranking, scored on warm rows only;
* ``cold``: the same ranking, scored on cold rows only (cold items must beat warm ones);
* ``cold_among_cold``: cold rows with only the cold items ranked (does the item tower carry
  signal at all, whatever the scale of its vectors);
* ``cold_share@20``: the share of all top-20 slots that go to cold items;
* ``rows``: how many warm and cold rows there are.

With ``slot_share`` > 0 every list reserves that share of its slots for cold items, filled by
the cold items' own ranking (:func:`bundle.serving_rules.interleave_new_items`, the rule the
service applies): all parts but ``cold_among_cold`` are scored on those lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from bundle.serving_rules import interleave_new_items, reserved_slots
from training.data import Dataset
from training.evaluation import (
    DEFAULT_KS,
    PAD_ITEM,
    SELECTION_METRIC,
    evaluate,
    list_metrics,
    top_k_items,
)

SHARE_K = 20


def new_items(dataset: Dataset) -> np.ndarray:
    """Bool [I]: items without a training interaction (held-out items included)."""
    return np.bincount(dataset.train[:, 1], minlength=dataset.num_items) == 0


def split_matrices(dataset: Dataset, split: str) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(relevant, seen)`` of a split: validation against training items, test against both."""
    if split == "valid":
        return dataset.matrix("valid"), dataset.matrix("train")
    if split == "test":
        return dataset.matrix("test"), dataset.matrix("train", "valid")
    raise ValueError(f"split must be 'valid' or 'test', got {split!r}")


def evaluate_embeddings(
    users: torch.Tensor, items: torch.Tensor, dataset: Dataset, split: str, batch_size: int = 2048
) -> dict[str, float]:
    """All-item metrics of one split on all its rows (what early stopping watches)."""
    relevant, seen = split_matrices(dataset, split)
    return evaluate(users, items, relevant, seen, batch_size=batch_size)


def _columns(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """``matrix`` with the entries of columns outside ``keep`` (bool [I]) removed."""
    out = matrix.multiply(sp.csr_matrix(keep.astype(np.float32))).tocsr()
    out.eliminate_zeros()
    return out


def ranked_lists(
    users: torch.Tensor,
    items: torch.Tensor,
    seen: sp.csr_matrix,
    evaluated: np.ndarray,
    cold: np.ndarray,
    slot_share: float = 0.0,
    k: int = max(DEFAULT_KS),
    batch_size: int = 2048,
) -> np.ndarray:
    """Top-``k`` lists over all items of the ``evaluated`` users (rows of ``seen`` masked), as
    served: with ``slot_share`` the reserved share of each list goes to the ``cold`` items
    (bool [I]) ranked among themselves. One ranking that every part of a report is scored on."""
    index = torch.as_tensor(evaluated, device=users.device)
    seen = seen[evaluated]
    top = top_k_items(users[index], items, seen, k, batch_size)
    cold_ids = np.flatnonzero(cold)
    if reserved_slots(slot_share, k) == 0 or cold_ids.size == 0:
        return top
    among = top_k_items(users[index], items[torch.as_tensor(cold_ids, device=items.device)],
                        seen[:, cold_ids], k, batch_size)
    among = np.where(among >= 0, cold_ids[np.maximum(among, 0)], PAD_ITEM)
    out = np.full_like(top, PAD_ITEM)
    for row, (ranked, new_ranked) in enumerate(zip(top.tolist(), among.tolist(), strict=True)):
        merged = interleave_new_items(
            [i for i in ranked if i >= 0], [i for i in new_ranked if i >= 0], slot_share, k,
            is_new=cold.__getitem__,
        )
        out[row, : len(merged)] = merged
    return out


def _share(top: np.ndarray, cold: np.ndarray) -> float:
    listed = top[:, :SHARE_K]
    listed = listed[listed >= 0]
    return float(cold[listed].mean()) if listed.size else 0.0


def _part(top: np.ndarray, relevant_rows: sp.csr_matrix) -> dict[str, float]:
    """Metrics of the ranked rows that have relevant items in ``relevant_rows``."""
    keep = np.diff(relevant_rows.indptr) > 0
    return list_metrics(top[keep], relevant_rows[keep])


def warm_cold_report(
    users: torch.Tensor,
    items: torch.Tensor,
    dataset: Dataset,
    split: str,
    batch_size: int = 2048,
    slot_share: float = 0.0,
) -> dict[str, Any]:
    """The report described in the module docstring for ``split`` ('valid' or 'test').

    All, warm and cold rows and the share are scored on one ranking of all items; the cold
    rows among cold items need a ranking of their own.
    """
    relevant, seen = split_matrices(dataset, split)
    cold = new_items(dataset)
    warm_rel, cold_rel = _columns(relevant, ~cold), _columns(relevant, cold)
    evaluated = np.flatnonzero(np.diff(relevant.indptr))
    top = ranked_lists(users, items, seen, evaluated, cold, slot_share, batch_size=batch_size)
    report: dict[str, Any] = {
        "all": _part(top, relevant[evaluated]),
        "rows": {"warm": int(warm_rel.nnz), "cold": int(cold_rel.nnz)},
    }
    if warm_rel.nnz:
        report["warm"] = _part(top, warm_rel[evaluated])
    if cold_rel.nnz:
        report["cold"] = _part(top, cold_rel[evaluated])
        cold_ids = np.flatnonzero(cold)
        report["cold_among_cold"] = evaluate(
            users,
            items[torch.as_tensor(cold_ids, device=items.device)],
            cold_rel[:, cold_ids],
            seen[:, cold_ids],
            batch_size=batch_size,
        )
    report[f"cold_share@{SHARE_K}"] = _share(top, cold)
    return report


def all_rows_and_share(
    users: torch.Tensor, items: torch.Tensor, dataset: Dataset, split: str, batch_size: int = 2048,
    slot_share: float = 0.0,
) -> tuple[dict[str, float], float]:
    """All-row metrics of a split and the new items' share of its top-20 slots, one ranking."""
    relevant, seen = split_matrices(dataset, split)
    evaluated = np.flatnonzero(np.diff(relevant.indptr))
    cold = new_items(dataset)
    top = ranked_lists(users, items, seen, evaluated, cold, slot_share, batch_size=batch_size)
    return _part(top, relevant[evaluated]), _share(top, cold)


def new_item_share(
    users: torch.Tensor, items: torch.Tensor, dataset: Dataset, split: str, batch_size: int = 2048,
    slot_share: float = 0.0,
) -> float:
    """Share of the top-20 slots of a split's evaluated users that go to new items."""
    return all_rows_and_share(users, items, dataset, split, batch_size, slot_share)[1]


def headline(report: dict[str, Any], metric: str = SELECTION_METRIC) -> dict[str, float | None]:
    """One metric from each part of a report (None where the part is absent)."""
    return {
        part: (report[part][metric] if part in report else None)
        for part in ("all", "warm", "cold", "cold_among_cold")
    } | {f"cold_share@{SHARE_K}": report[f"cold_share@{SHARE_K}"]}


PER_USER_PARTS = ("all", "warm", "cold")


def _ranked_relevance(
    users: torch.Tensor, items: torch.Tensor, dataset: Dataset, split: str, k: int, part: str,
    batch_size: int, slot_share: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user_ids, is_relevant [n, k], relevant counts [n])`` of one part's evaluated users."""
    if part not in PER_USER_PARTS:
        raise ValueError(f"part must be one of {PER_USER_PARTS}, got {part!r}")
    relevant, seen = split_matrices(dataset, split)
    cold = new_items(dataset)
    if part != "all":
        relevant = _columns(relevant, cold if part == "cold" else ~cold)
    evaluated = np.flatnonzero(np.diff(relevant.indptr))
    if evaluated.size == 0:
        return evaluated.astype(np.int64), np.zeros((0, k), dtype=bool), np.zeros(0)
    top = ranked_lists(users, items, seen, evaluated, cold, slot_share, k, batch_size)
    rel = relevant[evaluated]
    # (row, item) pairs of relevant items; a ranked item is a hit when its pair is among them
    rel_rows = np.repeat(np.arange(evaluated.size), np.diff(rel.indptr))
    stride = items.shape[0] + 1
    rel_keys = rel_rows.astype(np.int64) * stride + rel.indices.astype(np.int64)
    top_keys = np.where(top >= 0, np.arange(evaluated.size)[:, None] * stride + top, -1)
    return (evaluated.astype(np.int64), np.isin(top_keys, rel_keys),
            np.diff(rel.indptr).astype(np.float64))


def per_user_hits(
    users: torch.Tensor,
    items: torch.Tensor,
    dataset: Dataset,
    split: str,
    k: int = 20,
    part: str = "all",
    batch_size: int = 2048,
    slot_share: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(user_ids, recall@k)`` per evaluated user of one part of :func:`warm_cold_report`.

    Kept per user (not averaged) so two models can be compared by a paired bootstrap over the
    same users; the mean of the recalls equals ``warm_cold_report(...)[part]["recall@k"]``.
    ``part`` is 'all', 'warm' or 'cold' (cold rows ranked among all items); a part without
    rows gives two empty arrays.
    """
    ids, hit, counts = _ranked_relevance(users, items, dataset, split, k, part, batch_size,
                                         slot_share)
    return ids, (hit.sum(axis=1) / counts if ids.size else np.zeros(0, dtype=np.float64))


def per_user_ranks(
    users: torch.Tensor,
    items: torch.Tensor,
    dataset: Dataset,
    split: str,
    k: int = 10,
    part: str = "all",
    batch_size: int = 2048,
    slot_share: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(user_ids, rank)``: the 0-based position of each evaluated user's first relevant
    item in its top ``k``, ``k`` when none is there. Under leave-one-out (one relevant item)
    a rank gives both per-user metrics: HR@k = ``rank < k``, NDCG@k = ``1 / log2(rank + 2)``.
    """
    ids, hit, _ = _ranked_relevance(users, items, dataset, split, k, part, batch_size,
                                    slot_share)
    return ids, np.where(hit.any(axis=1), hit.argmax(axis=1), k).astype(np.int64)
