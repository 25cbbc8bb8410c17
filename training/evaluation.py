"""All-item ranking evaluation, as in the multimodal recommender papers (MetaMMF, DiffMM, ...).

Every evaluated user scores *every* item by the inner product of the user and item embeddings.
Items the user already has are masked out (the caller passes the mask: the training items, plus
the validation items when testing), the rest are ranked and the top ``K`` are compared with the
held-out (relevant) items. Reported per cut-off ``K`` and averaged over users with at least one
relevant item:

* ``recall@K``    = hits@K / |relevant|  (the standard definition, *not* min(|relevant|, K))
* ``precision@K`` = hits@K / K
* ``hit@K``       = 1 if hits@K > 0 else 0  (hit ratio)
* ``ndcg@K``      = DCG@K / IDCG@K with binary relevance, DCG@K = sum over hit ranks r <= K of
  1 / log2(r + 1) (ranks start at 1), and IDCG@K the same sum over the first
  min(|relevant|, K) ranks (every relevant item ranked on top).

Ranking is deterministic: equal scores are ordered by the lower item id first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["DEFAULT_KS", "evaluate", "list_metrics", "rank_metrics", "top_k_items"]
#: The one metric every choice is made on: early stopping, the serving rules, ``select``, the
#: nightly gate (each module names it by its role, all point here).
SELECTION_METRIC = "recall@20"

DEFAULT_KS: tuple[int, ...] = (10, 20, 50)

#: Id written in ranked lists for positions past the last rankable (unmasked) item.
PAD_ITEM = -1


# --------------------------------------------------------------------------------------------
# Metrics from ranked lists
# --------------------------------------------------------------------------------------------


def _check_ks(ks: Sequence[int], k_max: int) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks must name at least one cut-off K")
    for k in ks:
        if k <= 0:
            raise ValueError(f"cut-offs must be positive, got K={k}")
        if k > k_max:
            raise ValueError(f"cut-off K={k} exceeds the length of the ranked lists ({k_max})")
    return ks


def _metrics_from_pairs(
    top_items: np.ndarray,
    rel_users: np.ndarray,
    rel_items: np.ndarray,
    n_relevant: np.ndarray,
    ks: list[int],
) -> dict[str, float]:
    """Metrics for ranked lists ``top_items [U, Kmax]`` against unique (user, item) pairs.

    ``n_relevant[u]`` is the number of relevant items of user ``u`` (pairs must be unique).
    Users with ``n_relevant == 0`` are skipped; negative ids in ``top_items`` never hit.
    """
    num_users, k_max = top_items.shape
    keep = n_relevant > 0
    if not keep.any():
        raise ValueError(
            "no user has a relevant item: ranking metrics are averaged over users with at "
            "least one relevant (held-out) item, so there is nothing to evaluate"
        )

    # Encode (user, item) as one int64 key so that a single vectorised np.isin finds all hits.
    max_item = max(int(top_items.max(initial=-1)), int(rel_items.max(initial=-1)))
    stride = max_item + 1
    user_col = np.arange(num_users, dtype=np.int64)[:, None]
    top_keys = np.where(top_items >= 0, user_col * stride + top_items, -1)
    rel_keys = rel_users.astype(np.int64) * stride + rel_items.astype(np.int64)
    hits = np.isin(top_keys, rel_keys)[keep].astype(np.float64)  # [U', Kmax]
    n_rel = n_relevant[keep].astype(np.int64)

    discount = 1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64))  # rank r -> 1/log2(r+1)
    hits_cum = np.cumsum(hits, axis=1)
    dcg_cum = np.cumsum(hits * discount, axis=1)
    idcg_cum = np.cumsum(discount)

    out: dict[str, float] = {}
    for k in ks:
        n_hits = hits_cum[:, k - 1]
        idcg = idcg_cum[np.minimum(n_rel, k) - 1]
        out[f"recall@{k}"] = float(np.mean(n_hits / n_rel))
        out[f"ndcg@{k}"] = float(np.mean(dcg_cum[:, k - 1] / idcg))
        out[f"precision@{k}"] = float(np.mean(n_hits / k))
        out[f"hit@{k}"] = float(np.mean(n_hits > 0))
    return out


def rank_metrics(
    top_items: np.ndarray,
    relevant: Sequence[set[int] | Sequence[int] | np.ndarray],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Recall, NDCG, precision and hit ratio at each ``K`` from already-ranked lists.

    Args:
        top_items: int array ``[U, Kmax]``, row ``u`` the items ranked for user ``u``, best
            first, without repeated ids. Negative ids (padding, see ``top_k_items``) never
            count as hits but still occupy their rank.
        relevant: one collection of relevant (held-out) item ids per row of ``top_items``;
            duplicates are ignored.
        ks: cut-offs, each at most ``Kmax``.

    Returns:
        ``{"recall@K", "ndcg@K", "precision@K", "hit@K"}`` for every ``K``, each the mean over
        users with at least one relevant item (users with none are skipped).

    Raises:
        ValueError: on inconsistent shapes, a bad cut-off, or when no user has a relevant item.
    """
    top_items = np.asarray(top_items)
    if top_items.ndim != 2:
        raise ValueError(f"top_items must be 2-D [users, Kmax], got shape {top_items.shape}")
    if top_items.size and not np.issubdtype(top_items.dtype, np.integer):
        raise ValueError(f"top_items must hold integer item ids, got dtype {top_items.dtype}")
    top_items = top_items.astype(np.int64, copy=False)
    if len(relevant) != top_items.shape[0]:
        raise ValueError(
            f"relevant has {len(relevant)} entries but top_items has {top_items.shape[0]} rows"
        )
    ks = _check_ks(ks, top_items.shape[1])

    per_user: list[np.ndarray] = []
    for items in relevant:
        if isinstance(items, (set, frozenset)):
            arr = np.fromiter(items, dtype=np.int64, count=len(items))
        else:
            arr = np.asarray(items, dtype=np.int64).ravel()
        per_user.append(np.unique(arr))
    n_relevant = np.array([len(a) for a in per_user], dtype=np.int64)
    rel_items = np.concatenate(per_user) if per_user else np.zeros(0, dtype=np.int64)
    if rel_items.size and rel_items.min() < 0:
        raise ValueError("relevant item ids must be non-negative")
    rel_users = np.repeat(np.arange(len(per_user), dtype=np.int64), n_relevant)
    return _metrics_from_pairs(top_items, rel_users, rel_items, n_relevant, ks)


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------


def _as_csr(matrix: Any, shape: tuple[int, int], name: str) -> sp.csr_matrix:
    """A CSR copy of ``matrix`` with explicit zeros removed (so "stored" means "nonzero")."""
    if not sp.issparse(matrix):
        raise TypeError(f"{name} must be a scipy.sparse matrix, got {type(matrix).__name__}")
    if tuple(matrix.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(matrix.shape)}, expected {shape}")
    csr = sp.csr_matrix(matrix, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    return csr


def _check_embeddings(user_emb: torch.Tensor, item_emb: torch.Tensor) -> None:
    if user_emb.dim() != 2 or item_emb.dim() != 2:
        raise ValueError(
            f"embeddings must be 2-D, got user {tuple(user_emb.shape)}, "
            f"item {tuple(item_emb.shape)}"
        )
    if user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(
            f"embedding sizes differ: user d={user_emb.shape[1]}, item d={item_emb.shape[1]}"
        )
    if user_emb.device != item_emb.device:
        raise ValueError(f"embeddings on different devices: {user_emb.device}, {item_emb.device}")


def _score_dtype(user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.dtype:
    # Half precision produces many spurious ties; rank in at least float32.
    dtype = torch.promote_types(user_emb.dtype, item_emb.dtype)
    return dtype if dtype == torch.float64 else torch.float32


def top_k_columns(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top ``k`` columns of each row of ``scores`` (``k <= num columns``), ties -> lower id.

    ``torch.topk`` gives no guarantee about which of several equal scores it returns, nor in
    what order. So: (1) take ``topk`` of ``k + 1``; a row whose (k+1)-th score is strictly below
    its k-th has a unique top-k *set*; (2) the other rows (a tie across the boundary) are redone
    with a full stable descending sort, which keeps equal scores in id order; (3) every row's k
    winners are put in (score desc, id asc) order by sorting them by id and then stably by
    score. With continuous embeddings step (2) almost never fires, so the cost stays that of
    one ``topk``. Masked (-inf) positions are left as they come; the caller pads them out.
    """
    num_items = scores.shape[1]
    values, indices = torch.topk(scores, min(k + 1, num_items), dim=1, largest=True, sorted=True)
    if values.shape[1] > k:
        kth = values[:, k - 1]
        # A -inf k-th score means every rankable item is already in; the rest is padding.
        ambiguous = (values[:, k] == kth) & (kth != float("-inf"))
        indices = indices[:, :k]
        if bool(ambiguous.any()):
            rows = ambiguous.nonzero().squeeze(1)
            _, full = torch.sort(scores[rows], dim=1, descending=True, stable=True)
            indices[rows] = full[:, :k]
    indices, _ = torch.sort(indices, dim=1)
    values = torch.gather(scores, 1, indices)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return torch.gather(indices, 1, order)


@torch.no_grad()
def top_k_items(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: sp.csr_matrix | None,
    k: int,
    batch_size: int = 2048,
) -> np.ndarray:
    """The ``k`` best unmasked items of every user, scored by ``user_emb @ item_emb.T``.

    Computed on the embeddings' device, ``batch_size`` users at a time (the ``[batch, I]``
    score block is the only large temporary).

    Args:
        user_emb: ``[U, d]`` user embeddings (row ``u`` is the user of row ``u`` of ``exclude``).
        item_emb: ``[I, d]`` item embeddings, on the same device.
        exclude: ``[U, I]`` sparse mask; a nonzero at ``(u, i)`` removes item ``i`` from user
            ``u``'s ranking (score -inf). ``None`` masks nothing.
        k: list length.
        batch_size: users scored per block.

    Returns:
        ``int64 [U, k]`` item ids, best first. Ties: equal scores are ordered by the lower item
        id first, so the result is deterministic. When a user has fewer than ``k`` unmasked
        items (or ``k > I``), the positions past them hold ``-1`` (never a hit in
        ``rank_metrics``).
    """
    k = int(k)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    _check_embeddings(user_emb, item_emb)
    num_users, num_items = user_emb.shape[0], item_emb.shape[0]
    mask = None if exclude is None else _as_csr(exclude, (num_users, num_items), "exclude")

    out = np.full((num_users, k), PAD_ITEM, dtype=np.int64)
    if num_users == 0 or num_items == 0:
        return out
    k_eff = min(k, num_items)
    device = user_emb.device
    dtype = _score_dtype(user_emb, item_emb)
    items_t = item_emb.detach().to(dtype).t()
    if not bool(torch.isfinite(items_t).all()):
        raise ValueError("item embeddings contain NaN or inf")

    for start in range(0, num_users, batch_size):
        stop = min(start + batch_size, num_users)
        users = user_emb[start:stop].detach().to(dtype)
        if not bool(torch.isfinite(users).all()):
            raise ValueError("user embeddings contain NaN or inf")
        scores = users @ items_t  # [B, I]
        if mask is not None:
            lo, hi = mask.indptr[start], mask.indptr[stop]
            if hi > lo:
                rows = np.repeat(
                    np.arange(stop - start, dtype=np.int64), np.diff(mask.indptr[start : stop + 1])
                )
                flat = rows * num_items + mask.indices[lo:hi]  # offsets into the [B, I] block
                scores.view(-1).index_fill_(0, torch.from_numpy(flat).to(device), float("-inf"))
        top = top_k_columns(scores, k_eff)
        masked = torch.gather(scores, 1, top) == float("-inf")
        top = top.masked_fill(masked, PAD_ITEM)
        out[start:stop, :k_eff] = top.cpu().numpy()
    return out


def evaluate(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    relevant: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 2048,
) -> dict[str, float]:
    """All-item ranking metrics of embeddings against held-out interactions.

    Args:
        user_emb: ``[U, d]`` all user embeddings (CPU or CUDA; computed there).
        item_emb: ``[I, d]`` all item embeddings, same device.
        relevant: ``[U, I]`` sparse held-out (test or validation) interactions; nonzero = relevant.
        exclude: ``[U, I]`` sparse mask of items never ranked for the user (training items;
            plus validation items when testing). A relevant item that is also masked can never
            be hit. ``None`` masks nothing.
        ks: cut-offs.
        batch_size: users scored per block.

    Returns:
        ``rank_metrics`` of the users with at least one relevant item (only they are scored),
        plus ``"users"``: how many they are.
    """
    _check_embeddings(user_emb, item_emb)
    shape = (user_emb.shape[0], item_emb.shape[0])
    if not sp.issparse(relevant):
        raise TypeError(f"relevant must be a scipy.sparse matrix, got {type(relevant).__name__}")
    relevant = _as_csr(relevant, shape, "relevant")
    ks = [int(k) for k in ks]
    ks = _check_ks(ks, max(ks, default=1))

    users = np.flatnonzero(np.diff(relevant.indptr))
    if users.size == 0:
        raise ValueError("no user has a relevant item: nothing to evaluate")
    rel = relevant[users]
    excl = None if exclude is None else _as_csr(exclude, shape, "exclude")[users]
    index = torch.from_numpy(users).to(user_emb.device)
    top = top_k_items(user_emb[index], item_emb, excl, max(ks), batch_size=batch_size)
    return list_metrics(top, rel, ks)


def list_metrics(
    top_items: np.ndarray, relevant: sp.csr_matrix, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Metrics of ranked lists ``top_items [U, Kmax]`` against ``relevant`` [U, I] (row ``u``
    holds user ``u``'s relevant items), over the users with at least one relevant item, plus
    ``"users"``: how many they are. Lets one ranking be scored against several relevance sets.
    """
    n_relevant = np.diff(relevant.indptr).astype(np.int64)
    rel_users = np.repeat(np.arange(len(n_relevant), dtype=np.int64), n_relevant)
    ks = _check_ks(ks, top_items.shape[1])
    metrics = _metrics_from_pairs(
        top_items, rel_users, relevant.indices.astype(np.int64), n_relevant, ks
    )
    metrics["users"] = int((n_relevant > 0).sum())
    return metrics
