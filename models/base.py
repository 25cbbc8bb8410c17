"""The contract between every recommender and the trainer.

A recommender is an ``nn.Module`` built once over the whole training graph and the item
features (both kept as buffers). ``forward()`` returns the final embeddings of *all* users
and *all* items; the score of (u, i) is their inner product. The trainer knows nothing else
about a model, so adding a model means adding one file and one registry entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BipartiteGraph:
    """Training interactions as a user->item edge list (ids are dense 0-based ints)."""

    num_users: int
    num_items: int
    edge_index: torch.Tensor  # LongTensor [2, E]: row 0 user ids, row 1 item ids

    def to(self, device: torch.device | str) -> BipartiteGraph:
        return BipartiteGraph(self.num_users, self.num_items, self.edge_index.to(device))


class Recommender(nn.Module):
    """Base class of every model: all-user and all-item embeddings from one forward pass."""

    #: True when the model reads item modality features (and so can embed a brand-new item).
    uses_features: bool = False

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """Return ``(user_embeddings [U, d], item_embeddings [I, d])``."""
        raise NotImplementedError

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        """Final embeddings [B, d] of items that have features [B, F] but no interactions.

        The item tower the service runs for ``POST /items``. Models without a feature path
        (``uses_features`` False) cannot do this and raise ``NotImplementedError``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} learns only ID embeddings and cannot embed a new item from "
            "its features; use a model with uses_features=True (e.g. metammf_gcn, vbpr)"
        )

    #: Names of parameters indexed by user id / item id (their rows are regularised per batch).
    user_tables: tuple[str, ...] = ("user_embedding",)
    item_tables: tuple[str, ...] = ()

    def l2_penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ``||Phi||^2`` of eq. 19, restricted to what one BPR batch touches.

        Decision: the paper's L2 over *all* parameters, applied at every step under Adam, moves
        every embedding row that is not in the batch towards zero at the full learning rate
        (Adam normalises the tiny gradient), which wipes out the many users with one or two
        interactions. So, as LightGCN and MMRec do, the rows of the batch's users and items are
        penalised (summed, divided by the number of triples) and every shared weight in full.
        ``users`` holds the batch's user ids, ``items`` its positive and negative item ids.
        """
        batch = max(len(users), 1)
        total = users.new_zeros((), dtype=torch.float32)
        for name, parameter in self.named_parameters():
            if name in self.user_tables:
                total = total + parameter[users].pow(2).sum() / batch
            elif name in self.item_tables:
                total = total + parameter[items].pow(2).sum() / batch
            else:
                total = total + parameter.pow(2).sum()
        return total
