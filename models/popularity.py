"""MostPop: every user gets the items with the most training interactions (no training).

The floor every model must clear. Scores are the item's training count, so ties (and every
item without interactions, score 0) fall back to the lower item id, like all rankings here. It
cannot rank a new item above any warm one: new items score 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.base import BipartiteGraph, ModelConfig, Recommender, item_mask


class MostPopConfig(ModelConfig):
    """No hyperparameters but the common ``cold_items``."""


class MostPop(Recommender):
    """``y_ui = count(i)``: users are the vector ``[1]``, items ``[count(i)]``."""

    uses_features = False

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None = None,
        modality_dims: Sequence[int] = (),
        *,
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        degree = graph.item_degree().float()
        degree[item_mask(graph.num_items, cold_items)] = 0.0
        self.register_buffer("counts", degree.unsqueeze(1), persistent=False)
        self.register_buffer("ones", torch.ones(graph.num_users, 1), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ones, self.counts
