"""FREEDOM (Zhou et al., "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
Multimodal Recommendation", MM'23), as a baseline, after the authors' code in MMRec.

Two graphs. The item-item graph is built once from the raw features and frozen: per modality
each item's ``knn_k`` most cosine-similar items (itself included), binary, normalised
``D^-1/2 A D^-1/2`` (every edge ``1/k``), the modalities summed with fixed weights
(``modality_weights``; MMRec's ``mm_image_weight`` 0.1 for image against 0.9 for text, which
our data sets do not have: TikTok is image + audio, so the weights are a tuned
hyperparameter, equal by default). The user-item graph is LightGCN's, *denoised* during
training by degree-sensitive edge pruning: before every epoch only ``1 - edge_dropout`` of the
edges are kept, drawn with probability ``1/sqrt(deg_u deg_i)`` (the authors search 0.8 and 0.9:
80-90% of the edges dropped), normalised again; evaluation uses every edge.

Items are ``LightGCN(e)_i + (S^L e)_i`` (``mm_layers`` = L = 1), users LightGCN's. The loss is
BPR plus ``reg_weight`` times a BPR of the user against each modality's projected features
(``Linear(F_m, embed_dim)`` of the features, which are trainable, initialised at the raw
values). The item-item graph spans every item, those without training interactions
included (their ID rows are trained only as neighbours of others): FREEDOM is transductive,
so it has no path for an item that arrives after training (``embed_new_items`` raises).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from models.base import BipartiteGraph, ModelConfig, Recommender, TrainingBatch, item_mask
from models.graph import (
    SymmetricAdjacency,
    degree_sensitive_sample,
    lightgcn_layers,
    lightgcn_propagate,
    lightgcn_users_after,
)
from models.item_graph import check_weights, mean_graph, modality_blocks, top_k_neighbours
from models.losses import bpr_loss
from models.metammf import _check_features, _xavier_parameter, drop_item_edges


class FREEDOMConfig(ModelConfig):
    """MMRec's settings (src/configs/model/FREEDOM.yaml); ``reg_weight``, ``edge_dropout``
    (FREEDOM's "dropout") and the learning rate are its searched hyperparameters."""

    embed_dim: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=0)
    mm_layers: int = Field(1, ge=1)
    knn_k: int = Field(10, ge=1)
    modality_weights: list[float] | None = None
    reg_weight: float = Field(1e-4, ge=0.0)
    edge_dropout: float = Field(0.8, ge=0.0, lt=1.0)


class FREEDOM(Recommender):
    """LightGCN on the user-item graph plus a frozen item-item kNN graph (module docstring)."""

    uses_features = True
    item_tables = ("item_embedding",)

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int],
        *,
        embed_dim: int = 64,
        num_layers: int = 2,
        mm_layers: int = 1,
        knn_k: int = 10,
        modality_weights: Sequence[float] | None = None,
        reg_weight: float = 1e-4,
        edge_dropout: float = 0.8,
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        features = _check_features(item_features, modality_dims, graph.num_items)
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        dims = list(modality_dims) or [int(features.shape[1])]
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.num_layers, self.mm_layers = num_layers, mm_layers
        self.reg_weight, self.edge_dropout = float(reg_weight), float(edge_dropout)
        graph = drop_item_edges(graph, item_mask(graph.num_items, cold_items))
        self.train_graph = graph
        self.user_embedding = _xavier_parameter(graph.num_users, embed_dim)
        self.item_embedding = _xavier_parameter(graph.num_items, embed_dim)
        # the features are trainable in the authors' code (Embedding.from_pretrained, freeze=False)
        blocks = modality_blocks(features.float(), dims)
        self.features = nn.ParameterList(nn.Parameter(block.clone()) for block in blocks)
        # scored against the users, so as wide as them (MMRec's feat_embed_dim = embedding_size)
        self.projections = nn.ModuleList(nn.Linear(d, embed_dim) for d in dims)
        weights = check_weights(modality_weights, len(dims))
        neighbours = [top_k_neighbours(block, knn_k)[0] for block in blocks]  # all items
        self.item_graph = mean_graph(neighbours, weights, graph.num_items)
        self.adjacency = SymmetricAdjacency(graph)
        self.train_adjacency = self.adjacency
        self.register_buffer("train_edges", graph.edge_index.long().cpu(), persistent=False)

    def begin_epoch(self) -> None:
        if self.edge_dropout > 0.0:
            pruned = degree_sensitive_sample(self.train_graph, 1.0 - self.edge_dropout)
            self.train_adjacency = SymmetricAdjacency(pruned).to(self.user_embedding.device)

    def _item_graph_part(self) -> torch.Tensor:
        h = self.item_embedding
        for _ in range(self.mm_layers):
            h = self.item_graph(h)
        return h

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        adjacency = self.train_adjacency if self.training else self.adjacency
        users, items = lightgcn_propagate(self.user_embedding, self.item_embedding, adjacency,
                                          self.num_layers)
        return users, items + self._item_graph_part()

    def model_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        users, items = self()
        user = users[batch.users]
        losses = {"bpr": bpr_loss(user, items[batch.positives], items[batch.negatives])}
        if self.reg_weight > 0.0:
            modal = [bpr_loss(user, projected[batch.positives], projected[batch.negatives])
                     for projected in (p(f) for p, f in zip(self.projections, self.features,
                                                             strict=True))]
            losses["modality_bpr"] = self.reg_weight * torch.stack(modal).sum()
        return losses

    @torch.no_grad()
    def user_embeddings_after(self, pairs: torch.Tensor) -> torch.Tensor:
        """Users once ``pairs`` join their histories: LightGCN's user side
        (:func:`models.graph.lightgcn_users_after`)."""
        self.eval()
        layers = lightgcn_layers(self.user_embedding, self.item_embedding, self.adjacency,
                                 self.num_layers)
        return lightgcn_users_after(self()[0], self.user_embedding,
                                    [items for _, items in layers[:-1]], self.train_edges, pairs)
