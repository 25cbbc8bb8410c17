"""LightGCN (He et al., SIGIR'20): ID embeddings smoothed on the normalised interaction graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from models.base import BipartiteGraph, ModelConfig, Recommender
from models.graph import (
    SymmetricAdjacency,
    lightgcn_layers,
    lightgcn_propagate,
    lightgcn_users_after,
)


class LightGCNConfig(ModelConfig):
    embed_dim: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=0)


class LightGCN(Recommender):
    """``e^(k+1) = D^-1/2 A D^-1/2 e^(k)``, final = mean of layers ``0..num_layers``.

    ID embeddings only (``uses_features`` False; ``item_features``/``modality_dims`` are accepted
    for the common constructor and ignored), Xavier init. ``num_layers`` defaults to 2, the
    paper's setting for every GCN baseline (section 5.3). A new item has no ID embedding, so
    :meth:`embed_new_items` raises ``NotImplementedError``; ``cold_items`` is accepted for the
    common constructor and ignored (a held-out item keeps its untrained initial embedding, so it
    ranks at random: the honest "no information" baseline).
    """

    uses_features = False
    item_tables = ("item_embedding",)

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None = None,
        modality_dims: Sequence[int] = (),
        *,
        embed_dim: int = 64,
        num_layers: int = 2,
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.embed_dim, self.num_layers = embed_dim, num_layers
        self.user_embedding = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(graph.num_users, embed_dim))
        )
        self.item_embedding = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(graph.num_items, embed_dim))
        )
        self.adjacency = SymmetricAdjacency(graph)
        self.register_buffer("train_edges", graph.edge_index.long().cpu(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return lightgcn_propagate(
            self.user_embedding, self.item_embedding, self.adjacency, self.num_layers
        )

    @torch.no_grad()
    def user_embeddings_after(self, pairs: torch.Tensor) -> torch.Tensor:
        """The users once ``pairs`` join their histories (:func:`lightgcn_users_after`)."""
        layers = lightgcn_layers(self.user_embedding, self.item_embedding, self.adjacency,
                                 self.num_layers)
        return lightgcn_users_after(self()[0], self.user_embedding,
                                    [items for _, items in layers[:-1]], self.train_edges, pairs)

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "LightGCN has only ID embeddings, learned from interactions: a new item without "
            "interactions has none. Use a feature model (metammf_gcn, metammf_mf, vbpr) for "
            "new items, or retrain once the item has interactions."
        )
