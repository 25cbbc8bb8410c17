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


def mean_adjacency(
    index_dst: torch.Tensor, index_src: torch.Tensor, num_dst: int, num_src: int
) -> torch.Tensor:
    """Sparse row-normalised adjacency: ``A @ x_src`` is the mean of each dst node's neighbours.

    Rows without neighbours stay zero (their mean aggregation contributes nothing).
    """
    degree = torch.bincount(index_dst, minlength=num_dst).clamp(min=1).float()
    values = 1.0 / degree[index_dst]
    return torch.sparse_coo_tensor(
        torch.stack([index_dst, index_src]), values, (num_dst, num_src)
    ).coalesce()


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

    def regularised_parameters(self) -> list[torch.Tensor]:
        """Parameters under the L2 term of eq. 19 (default: all of them)."""
        return list(self.parameters())
