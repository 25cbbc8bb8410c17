"""Content kNN: a user is the mean of its items' conditioned features; score by cosine.

Training-free, the baseline every multimodal model should beat: it ranks new items as well as
warm ones, because it compares an item with the user's own history in content space. Features
are conditioned as in :mod:`models.conditioning` (per modality centred on the training items and
scaled to unit norm, then concatenated); users are the mean over their training items (the
graph the model is built on; with ``history_decay`` < 1 newer items weigh more, see
:class:`models.history.HistoryMean`), and both sides are L2-normalised so the inner product is a
cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from models.base import BipartiteGraph, ModelConfig, Recommender, item_mask
from models.conditioning import CONDITIONING_MODES, FeatureConditioner
from models.history import HistoryMean
from models.metammf import _check_features, drop_item_edges


class ContentKNNConfig(ModelConfig):
    conditioning: Literal[CONDITIONING_MODES] = "center_l2"
    history_decay: float = Field(1.0, gt=0.0, le=1.0)


class ContentKNN(Recommender):
    """``y_ui = cos(mean_{j in N(u)} c_j, c_i)`` with conditioned features ``c``."""

    uses_features = True

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int],
        *,
        conditioning: str = "center_l2",
        history_decay: float = 1.0,
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        features = _check_features(item_features, modality_dims, graph.num_items)
        graph = drop_item_edges(graph, item_mask(graph.num_items, cold_items))
        self.conditioner = FeatureConditioner(
            features, modality_dims, conditioning, graph.item_degree() > 0
        )
        self.feature_dim = int(features.shape[1])
        items = F.normalize(self.conditioner(features), dim=1)
        self.history_decay = float(history_decay)
        users = F.normalize(HistoryMean(graph, history_decay).user_mean(items), dim=1)
        self.register_buffer("items", items, persistent=False)
        self.register_buffer("users", users, persistent=False)
        self.register_buffer("train_edges", graph.edge_index.long().cpu(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users, self.items

    @torch.no_grad()
    def user_embeddings_after(self, pairs: torch.Tensor) -> torch.Tensor:
        """Users in ``pairs`` become the mean over their whole history (training + pairs)."""
        pairs = pairs.long().to(self.users.device)
        union = torch.cat([self.train_edges.to(pairs.device), pairs.T], dim=1)
        users = self.users.clone()
        changed = torch.unique(pairs[:, 0])
        if changed.numel():
            mean = HistoryMean(BipartiteGraph(self.users.shape[0], self.items.shape[0], union),
                               self.history_decay).to(pairs.device)
            users[changed] = F.normalize(mean.user_mean(self.items)[changed], dim=1)
        return users

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.conditioner(features.float()), dim=1)
