"""Matrix-factorisation baselines: BPR-MF (Rendle et al., UAI'09), VBPR (He & McAuley, AAAI'16)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from models.base import BipartiteGraph, ModelConfig, Recommender, item_mask


def _xavier(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(*shape)))


class BPRConfig(ModelConfig):
    embed_dim: int = Field(64, ge=1)


class VBPRConfig(BPRConfig):
    feature_dim: int | None = Field(None, ge=1)


class BPRMF(Recommender):
    """Free user and item embeddings [U, d], [I, d]; score = inner product (trained with BPR).

    ``item_features``, ``modality_dims`` and ``cold_items`` are accepted for the common
    constructor and ignored (a held-out item keeps its untrained initial embedding).
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
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_users, self.num_items, self.embed_dim = graph.num_users, graph.num_items, embed_dim
        self.user_embedding = _xavier(graph.num_users, embed_dim)
        self.item_embedding = _xavier(graph.num_items, embed_dim)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding, self.item_embedding


class VBPR(Recommender):
    """VBPR: user ``[gamma_u ; theta_u]``, item ``[gamma_i ; E f_i]``, score = inner product.

    ``f_i`` is the concatenation of all modality features (as the MetaMMF paper adapts VBPR,
    section 5.3) and ``E`` a bias-free linear projection to ``feature_dim`` (default
    ``embed_dim // 2``); ``gamma`` has the remaining ``embed_dim - feature_dim`` dims.
    Decision: the item bias ``beta_i`` and the visual bias ``beta'^T f_i`` of the original VBPR
    are omitted (the user-independent terms ``alpha + beta_u`` do not change a ranking anyway), so
    the score stays a pure inner product that FAISS can search. This changes the model: VBPR's
    per-item popularity offset is gone (it could be folded in as an extra item dimension against
    a constant-1 user dimension, which this baseline does not do).

    A new item gets ``[0 ; E f]`` from :meth:`embed_new_items` (VBPR's own cold-start rule:
    no interactions, no ``gamma_i``), and so do the ``cold_items`` (held out of training) in
    ``forward()``, in train and eval mode.
    """

    uses_features = True
    item_tables = ("item_gamma",)
    view_buffer = "item_features"

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int] = (),
        *,
        embed_dim: int = 64,
        feature_dim: int | None = None,
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if item_features is None or item_features.dim() != 2:
            raise ValueError("VBPR needs item_features [num_items, F]")
        if item_features.shape[0] != graph.num_items:
            raise ValueError(
                f"item_features has {item_features.shape[0]} rows, graph {graph.num_items} items"
            )
        if modality_dims and sum(modality_dims) != item_features.shape[1]:
            raise ValueError(
                f"modality_dims {list(modality_dims)} do not sum to {item_features.shape[1]}"
            )
        feature_dim = embed_dim // 2 if feature_dim is None else feature_dim
        if not 0 < feature_dim < embed_dim:
            raise ValueError(f"feature_dim must be in (0, embed_dim), got {feature_dim}")
        self.num_users, self.num_items, self.embed_dim = graph.num_users, graph.num_items, embed_dim
        self.feature_dim = feature_dim
        self.register_buffer("item_features", item_features.detach().float(), persistent=False)
        self.modality_dims = list(modality_dims) or [int(item_features.shape[1])]
        self.user_embedding = _xavier(graph.num_users, embed_dim)  # [gamma_u ; theta_u]
        self.item_gamma = _xavier(graph.num_items, embed_dim - feature_dim)  # gamma_i
        self.projection = nn.Linear(item_features.shape[1], feature_dim, bias=False)  # E
        nn.init.xavier_uniform_(self.projection.weight)
        self.register_buffer("cold_mask", item_mask(graph.num_items, cold_items), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        gamma = self.item_gamma.masked_fill(self.cold_mask.unsqueeze(1), 0.0)
        items = torch.cat([gamma, self.projection(self.item_features)], dim=1)
        return self.user_embedding, items

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        """``[0 ; E f]`` [B, d] for items without interactions."""
        visual = self.projection(features.to(self.item_features.dtype))
        return torch.cat([visual.new_zeros(len(features), self.item_gamma.shape[1]), visual], 1)
