"""A user's history as the content side reads it: how many newer items each one has, their
recency weights, and the (weighted) mean of item rows over every user's history."""

from __future__ import annotations

import torch
from torch import nn

from models.base import BipartiteGraph
from models.graph import SparseOperator


def newer_in_history(users: torch.Tensor) -> torch.Tensor:
    """Per edge (users [E] of edges listed oldest first), how many later edges its user has:
    0 for each user's newest item."""
    users = users.long().cpu()
    order = torch.sort(users, stable=True).indices
    sorted_users = users[order]
    count = torch.bincount(sorted_users, minlength=int(users.max()) + 1 if users.numel() else 0)
    start = torch.cumsum(count, 0) - count
    position = torch.arange(users.numel()) - start[sorted_users]
    newer = torch.empty_like(users)
    newer[order] = count[sorted_users] - 1 - position
    return newer


class HistoryMean(nn.Module):
    """A user's mean of item vectors over its training history, newer items weighing more.

    Item ``j`` of a history weighs ``decay ** n_j`` with ``n_j`` the number of the user's items
    newer than it (edges are oldest first); ``decay = 1`` is the plain mean. The weights of
    (user, item) pairs can be read back (:meth:`weights_of`) to take one item out of a mean.
    """

    def __init__(self, graph: BipartiteGraph, decay: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"history decay must be in (0, 1], got {decay}")
        users, items = graph.edge_index[0].long().cpu(), graph.edge_index[1].long().cpu()
        self.num_users, self.num_items, self.decay = graph.num_users, graph.num_items, decay
        weight = decay ** newer_in_history(users).float() if users.numel() else torch.ones(0)
        total = torch.zeros(graph.num_users).index_add_(0, users, weight)
        self.register_buffer("totals", total, persistent=False)
        self.users_from_items = SparseOperator(
            users, items, weight / total[users].clamp(min=1e-12),
            (graph.num_users, graph.num_items))
        keys = users * graph.num_items + items
        order = torch.argsort(keys)
        self.register_buffer("keys", keys[order], persistent=False)
        self.register_buffer("key_weights", weight[order], persistent=False)

    def user_mean(self, item_x: torch.Tensor) -> torch.Tensor:
        """[U, d]: each user's weighted mean of ``item_x`` over its history (zero if none)."""
        return self.users_from_items(item_x)

    def history_rows(
        self, users: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(row, item, share)`` [E_b] of every entry of ``users``' histories (``row``
        indexes ``users``): the rows of :meth:`user_mean`, so that the mean of a few users
        reads only their items' rows (``sum share * item_x[item]`` per row)."""
        op = self.users_from_items
        start = op.crow.index_select(0, users)
        count = op.crow.index_select(0, users + 1) - start
        row = torch.repeat_interleave(torch.arange(len(users), device=users.device), count)
        # each entry's position in the CSR arrays: its row's start plus its rank in the row
        first = torch.cumsum(count, 0) - count
        at = torch.arange(len(row), device=users.device) + (start - first).index_select(0, row)
        return row, op.col.index_select(0, at), op.val.index_select(0, at)

    def weights_of(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The weight of each (user, item) pair in its user's mean (0 for a pair that is not
        in the history)."""
        if self.keys.numel() == 0:
            return torch.zeros(users.shape, device=self.keys.device)
        keys = users.long() * self.num_items + items.long()
        at = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
        return torch.where(self.keys[at] == keys, self.key_weights[at],
                           torch.zeros_like(self.key_weights[at]))


def recency_weights(mask: torch.Tensor, decay: float | torch.Tensor) -> torch.Tensor:
    """Weights [B, H] of the slots of histories (oldest first, ``mask`` 1 where a slot holds an
    item, whatever the padding side): ``decay ** (valid slots after this one)``, 0 on padding.
    What :class:`HistoryMean` gives a served history (traceable for the user tower)."""
    after = mask.flip(1).cumsum(1).flip(1) - mask
    return mask * torch.exp(after * torch.log(torch.as_tensor(decay, dtype=mask.dtype)))
