"""Item-item content graphs: every item's top-k cosine neighbours, per modality, frozen.

The graph FREEDOM (Zhou et al., MM'23) freezes and LATTICE (Zhang et al., MM'21) starts from:
for modality ``m`` the ``k`` items whose features are most cosine-similar to item ``i`` are its
neighbours; FREEDOM keeps the edges binary and normalises each modality's matrix as
``D^-1/2 A D^-1/2`` with ``D`` the row sums (``k`` for every row, so every edge weighs ``1/k``:
a neighbour mean), then sums the modalities with fixed weights. Propagating item ID embeddings
over it (``h = S E``) gives every item the collaborative embedding of its content neighbours.

Neighbours are searched among ``candidates`` (all items, or only those with training
interactions: the only items whose ID embeddings mean anything, so that a new item, which has
none, lands among trained ones). An item searched among candidates that include itself finds
itself first (FREEDOM keeps that self edge); :func:`neighbour_rows` also gives each item its
neighbours *as a new item would have them*, without itself, which is what training a new-item
path needs. The search runs in row chunks of an exact inner product, so memory stays at
``chunk x candidates`` whatever the catalogue (10^5 items: see ``benchmarks/item_graph.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.graph import SparseOperator

#: Rows of the similarity matrix computed at once ([chunk, candidates] floats).
SEARCH_CHUNK = 2048


@torch.no_grad()
def top_k_neighbours(
    keys: torch.Tensor,
    k: int,
    candidates: torch.Tensor | None = None,
    *,
    queries: torch.Tensor | None = None,
    chunk: int = SEARCH_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(neighbour ids [Q, k], cosine similarities [Q, k])``, best first, of every query among
    the ``candidates`` (item ids into ``keys``; all items when None). ``queries`` [Q, d] are
    the rows searched for (default: ``keys`` itself, so Q = I). Equal similarities keep the
    lower candidate position first. Fewer than ``k`` candidates: all of them (k shrinks)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    keys = F.normalize(keys.float(), dim=1)
    pool = keys if candidates is None else keys[candidates]
    if pool.shape[0] == 0:
        raise ValueError("no candidate items to find neighbours among")
    k = min(k, pool.shape[0])
    queries = keys if queries is None else F.normalize(queries.float(), dim=1)
    ids, sims = [], []
    for start in range(0, queries.shape[0], chunk):
        block = queries[start : start + chunk] @ pool.T
        value, index = torch.topk(block, k, dim=1)
        ids.append(index)
        sims.append(value)
    index = torch.cat(ids) if ids else torch.zeros(0, k, dtype=torch.long)
    value = torch.cat(sims) if sims else torch.zeros(0, k)
    if candidates is not None:
        index = candidates.to(index.device)[index]
    return index, value


def neighbour_rows(
    keys: torch.Tensor, k: int, candidates: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(with_self [I, k], as_new [I, k])`` neighbour ids of every item: the top ``k``
    candidates, and the top ``k`` candidates other than the item itself (how the item would be
    placed if it were new; for an item outside the candidates the two are equal)."""
    found, _ = top_k_neighbours(keys, k + 1, candidates)
    with_self = found[:, :k]
    own = found == torch.arange(found.shape[0], device=found.device).unsqueeze(1)
    # drop the item itself where it was found, else the (k+1)-th neighbour
    drop = torch.where(own.any(1), own.long().argmax(1), torch.full_like(own[:, 0], k,
                                                                          dtype=torch.long))
    keep = torch.ones_like(own)
    keep[torch.arange(found.shape[0]), drop] = False
    as_new = found[keep].reshape(found.shape[0], k)
    return with_self, as_new


def mean_graph(
    neighbours: Sequence[torch.Tensor], weights: Sequence[float], num_items: int
) -> SparseOperator:
    """``S = sum_m weights[m] * S_m`` [I, I] with ``S_m[i, j] = 1/k`` for each of item ``i``'s
    ``k`` neighbours in modality ``m`` (FREEDOM's normalised binary graph: ``D^-1/2 A D^-1/2``
    with every row sum ``k``); an edge found in two modalities gets both weights."""
    if len(neighbours) != len(weights):
        raise ValueError(f"{len(neighbours)} neighbour tables but {len(weights)} weights")
    rows, cols, values = [], [], []
    for table, weight in zip(neighbours, weights, strict=True):
        count, k = table.shape
        rows.append(torch.arange(count).repeat_interleave(k))
        cols.append(table.reshape(-1).cpu())
        values.append(torch.full((count * k,), float(weight) / k))
    return SparseOperator(torch.cat(rows), torch.cat(cols), torch.cat(values),
                          (num_items, num_items))


def modality_blocks(features: torch.Tensor, dims: Sequence[int]) -> list[torch.Tensor]:
    """The columns of each modality of ``features`` [I, sum(dims)]."""
    return list(torch.split(features, list(dims), dim=1))


def check_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Modality weights of a graph: equal when None; else ``count`` non-negative numbers,
    scaled to sum to 1."""
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"item graph weights must be {count} non-negative numbers with a "
                         f"positive sum, got {weights}")
    return [w / sum(weights) for w in weights]


class ContentNeighbourGraph(nn.Module):
    """A frozen item-item graph over content keys, and the same placement for a new item.

    Built from one key table per modality (``build``): each item's ``k`` nearest candidates in
    each modality, twice (with itself, and as a new item would find them, without itself;
    :func:`neighbour_rows`). ``smooth(x)`` / ``smooth_as_new(x)`` multiply ``x`` [I, d] by the
    two graphs of :func:`mean_graph`; :meth:`place` does the same for items given only their
    keys (the service's new items), exactly as the graph would have placed them had they been
    in the catalogue when it was built. The neighbour tables are persistent buffers (a graph
    rebuilt during training is restored with the weights); the sparse operators follow them.
    """

    def __init__(self, k: int, weights: Sequence[float] | None, num_modalities: int,
                 candidates: torch.Tensor) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"item graph k must be >= 1, got {k}")
        if len(candidates) < 2:
            raise ValueError("an item graph needs at least 2 items with training interactions")
        self.k = min(int(k), len(candidates) - 1)  # a tiny catalogue: every other item
        self.weights = check_weights(weights, num_modalities)
        self.register_buffer("candidates", torch.as_tensor(candidates, dtype=torch.long))
        self.register_buffer("with_self", torch.zeros(0, num_modalities, self.k,
                                                      dtype=torch.long))
        self.register_buffer("as_new", torch.zeros(0, num_modalities, self.k, dtype=torch.long))
        self.register_load_state_dict_post_hook(lambda module, _: module._operators())

    def build(self, keys: Sequence[torch.Tensor]) -> None:
        """Find every item's neighbours among the candidates in each key table [I, d_m]."""
        if len(keys) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} key tables, got {len(keys)}")
        rows = [neighbour_rows(key, self.k, self.candidates) for key in keys]
        self.with_self = torch.stack([r[0] for r in rows], dim=1)
        self.as_new = torch.stack([r[1] for r in rows], dim=1)
        self._operators()

    def _operators(self) -> None:
        num_items, device = self.with_self.shape[0], self.with_self.device
        for name in ("with_self", "as_new"):
            table = getattr(self, name).cpu()
            graph = mean_graph(table.unbind(1), self.weights, num_items).to(device)
            setattr(self, f"{name}_graph", graph)

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """``S x`` [I, d]: every item's weighted neighbour mean (itself included if found)."""
        return self.with_self_graph(x)

    def smooth_as_new(self, x: torch.Tensor) -> torch.Tensor:
        """``S' x`` [I, d]: the neighbour mean of every item placed as a new item."""
        return self.as_new_graph(x)

    def place(self, query_keys: Sequence[torch.Tensor], candidate_keys: Sequence[torch.Tensor],
              table: torch.Tensor) -> torch.Tensor:
        """``[B, d]``: for items with keys ``query_keys`` (one [B, d_m] per modality), the
        weighted mean of ``table`` [C, d] over their ``k`` nearest candidates (rows of
        ``candidate_keys`` [C, d_m], unit norm). Traceable, so the item tower exports it."""
        out = None
        for query, pool, weight in zip(query_keys, candidate_keys, self.weights, strict=True):
            similarity = F.normalize(query, dim=1) @ pool.T
            index = torch.topk(similarity, self.k, dim=1).indices
            part = weight * table[index].mean(dim=1)
            out = part if out is None else out + part
        return out
