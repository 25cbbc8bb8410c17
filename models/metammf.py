"""Fusion-initialised recommenders: MetaMMF_MF (eq. 16) and MetaMMF_GCN (eqs. 17-18).

Item ``i`` starts from ``[e_m_i ; e_c_i]``: ``e_m_i = fusion(x_i)`` of size ``d_m = embed_dim // 2``
(32 at the paper's 64, the size of its fusion output) and a free ID ("collaborative") embedding
``e_c_i`` of size ``embed_dim - d_m``. The fusion module is any ``[B, F] -> [B, d_m]`` module
(:class:`models.fusion.MetaMMFFusion` by default; the static controls of Table 3 plug in the same
way, see :mod:`models.registry`).

New-item readiness (DESIGN.md, "New items and new users"):

* ``cold_items``: items held out of training. They always (train and eval mode) use the learned
  ``unknown_item`` vector instead of ``e_c_i`` and, in the GCN, receive no neighbour messages;
  every edge that touches them is removed from the stored graph at construction, so users do not
  aggregate from them either. Their embeddings equal :meth:`embed_new_items` of their features.
* ``id_dropout``: in training mode each ``forward()`` draws that share of items and treats them
  like cold items for that step (``unknown_item`` instead of ``e_c_i``; in the GCN their incoming
  neighbour mean is dropped, while their users still aggregate from them). This trains the path
  the service's item tower runs: ``fusion -> [e_m ; unknown] -> (GCN) self path``.

Features and graph are non-persistent buffers: ``.to(device)`` moves them, ``state_dict()`` holds
only learned parameters (rebuild the model over the same data, then load it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from models.base import BipartiteGraph, ModelConfig, Recommender, ServingTowers, item_mask
from models.fusion import MetaFusionConfig, MetaMMFFusion, StaticFusionConfig
from models.graph import BipartiteMeanAdjacency, BipartiteSAGE


def _xavier_parameter(*shape: int) -> nn.Parameter:
    """Xavier-uniform parameter; a vector is initialised as a [1, n] matrix."""
    data = torch.empty(*shape) if len(shape) > 1 else torch.empty(1, shape[0])
    nn.init.xavier_uniform_(data)
    return nn.Parameter(data.reshape(shape))


def _check_features(
    item_features: torch.Tensor | None, modality_dims: Sequence[int], num_items: int
) -> torch.Tensor:
    if item_features is None:
        raise ValueError("this model fuses item features: item_features must not be None")
    if item_features.dim() != 2 or item_features.shape[0] != num_items:
        raise ValueError(
            f"item_features must be [num_items={num_items}, F], got {tuple(item_features.shape)}"
        )
    if modality_dims and sum(modality_dims) != item_features.shape[1]:
        raise ValueError(
            f"modality_dims {list(modality_dims)} sum to {sum(modality_dims)}, "
            f"but item_features have {item_features.shape[1]} columns"
        )
    if not torch.isfinite(item_features).all():
        raise ValueError("item_features contain NaN or inf")
    return item_features.detach().float()


class FusedItemConfig(ModelConfig):
    """What :class:`FusedItemRecommender` takes (its fusion comes from the fusion config)."""

    embed_dim: int = Field(64, ge=2)
    id_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    standardize: bool = False


class MetaMMFMFConfig(FusedItemConfig, MetaFusionConfig):
    """``metammf_mf`` (eq. 16)."""


class FusedItemRecommender(Recommender):
    """Shared part of MetaMMF_MF / MetaMMF_GCN: users, item layer 0, new-item handling."""

    uses_features = True
    item_tables = ("item_id_embedding",)
    view_buffer = "item_features"

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int],
        *,
        fusion: nn.Module | None = None,
        embed_dim: int = 64,
        id_dropout: float = 0.0,
        cold_items: torch.Tensor | None = None,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        features = _check_features(item_features, modality_dims, graph.num_items)
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {id_dropout}")
        if embed_dim < 2:
            raise ValueError(f"embed_dim must be >= 2, got {embed_dim}")
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.embed_dim = embed_dim
        self.fusion_dim = embed_dim // 2  # d_m
        self.id_dim = embed_dim - self.fusion_dim  # d_c
        self.id_dropout = float(id_dropout)
        self.feature_dim = features.shape[1]
        self.fusion = (
            fusion if fusion is not None else MetaMMFFusion(self.feature_dim, self.fusion_dim)
        )
        fusion_out = getattr(self.fusion, "out_dim", self.fusion_dim)
        if fusion_out != self.fusion_dim:
            raise ValueError(
                f"fusion outputs {fusion_out} dims but d_m = embed_dim // 2 = {self.fusion_dim}"
            )
        self.register_buffer("item_features", features, persistent=False)
        self.modality_dims = list(modality_dims) or [self.feature_dim]
        # Optional z-scoring of every feature dimension over the catalogue, inside the model so
        # that the exported item tower applies it to raw features too. (TikTok's visual features
        # are all positive with mean 2.7, norm ~33 against ~4.5 for audio.)
        mean = features.mean(0) if standardize else torch.zeros(features.shape[1])
        std = features.std(0).clamp(min=1e-6) if standardize else torch.ones(features.shape[1])
        self.register_buffer("feature_mean", mean, persistent=False)
        self.register_buffer("feature_std", std, persistent=False)
        self.register_buffer("cold_mask", item_mask(graph.num_items, cold_items), persistent=False)
        self.user_embedding = _xavier_parameter(graph.num_users, embed_dim)  # e_u
        self.item_id_embedding = _xavier_parameter(graph.num_items, self.id_dim)  # e_c
        self.unknown_item = _xavier_parameter(self.id_dim)  # replaces e_c of new items

    def dropped_items(self) -> torch.Tensor | None:
        """Bool [I] of items using ``unknown_item`` in this forward (cold + id_dropout draw)."""
        mask = self.cold_mask
        if self.training and self.id_dropout > 0.0:
            draw = torch.rand(self.num_items, device=mask.device) < self.id_dropout
            mask = mask | draw
        return mask if bool(mask.any()) else None

    def _layer0(self, features: torch.Tensor, id_part: torch.Tensor) -> torch.Tensor:
        features = (features - self.feature_mean) / self.feature_std
        return torch.cat([self.fusion(features), id_part], dim=1)

    def item_embeddings0(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(e_i^(0) = [e_m ; e_c] [I, d], dropped-items mask or None)`` (eqs. 16-17)."""
        dropped = self.dropped_items()
        id_part = self.item_id_embedding
        if dropped is not None:
            id_part = torch.where(
                dropped.unsqueeze(1), self.unknown_item.expand_as(id_part), id_part
            )
        return self._layer0(self.item_features, id_part), dropped

    def new_items0(self, features: torch.Tensor) -> torch.Tensor:
        """``[fusion(x) ; unknown_item]`` [B, d] for items without an ID embedding."""
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"features must be [B, {self.feature_dim}], got {tuple(features.shape)}"
            )
        features = features.to(self.item_features.dtype)
        return self._layer0(features, self.unknown_item.expand(features.shape[0], -1))


class FusionMF(FusedItemRecommender):
    """MetaMMF_MF (eq. 16): ``y_ui = e_u^T [e_m_i ; e_c_i]`` with a free ``e_u`` [U, embed_dim]."""

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        items, _ = self.item_embeddings0()
        return self.user_embedding, items

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        """``[fusion(x) ; unknown_item]``: equals ``forward()``'s rows of cold items."""
        return self.new_items0(features)


def drop_item_edges(graph: BipartiteGraph, items: torch.Tensor) -> BipartiteGraph:
    """The graph without any edge that touches a marked item (bool mask [I])."""
    keep = ~items.to(graph.edge_index.device)[graph.edge_index[1]]
    return BipartiteGraph(graph.num_users, graph.num_items, graph.edge_index[:, keep])


READOUTS = ("last", "mean")


class FusionGCNConfig(FusedItemConfig, StaticFusionConfig):
    """``early_/late_/hybrid_gcn``: :class:`FusionGCN` with a static fusion."""

    num_layers: int = Field(2, ge=1)
    user_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    readout: Literal[READOUTS] = "last"


class MetaMMFGCNConfig(FusionGCNConfig, MetaFusionConfig):
    """``metammf_gcn`` (eqs. 17-18)."""


class FusionGCN(FusedItemRecommender):
    """MetaMMF_GCN (eqs. 17-18).

    ``e_u^(0)`` is a free embedding, ``e_i^(0) = [fusion(x_i) ; e_c_i]``; ``num_layers`` layers
    of :class:`models.graph.BipartiteSAGE` (separate user/item weights, mean aggregation,
    LeakyReLU); the final embeddings are the layer-L outputs, scored by inner product.

    ``readout="mean"`` (an option, not the paper's eq. 18) scores the mean of layers 0..L
    instead, as LightGCN does. Measured once on TikTok validation it scored lower than the
    paper's form (0.053 vs 0.058 Recall@20 at the same setting), so it is off by default.
    """

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int],
        *,
        fusion: nn.Module | None = None,
        embed_dim: int = 64,
        num_layers: int = 2,
        id_dropout: float = 0.0,
        user_dropout: float = 0.0,
        readout: str = "last",
        cold_items: torch.Tensor | None = None,
        negative_slope: float = 0.01,
        standardize: bool = False,
    ) -> None:
        super().__init__(
            graph,
            item_features,
            modality_dims,
            fusion=fusion,
            embed_dim=embed_dim,
            id_dropout=id_dropout,
            cold_items=cold_items,
            standardize=standardize,
        )
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        if not 0.0 <= user_dropout < 1.0:
            raise ValueError(f"user_dropout must be in [0, 1), got {user_dropout}")
        self.num_layers = num_layers
        self.user_dropout = float(user_dropout)
        self.adjacency = BipartiteMeanAdjacency(drop_item_edges(graph, self.cold_mask))
        self.sage = BipartiteSAGE(embed_dim, num_layers, negative_slope)
        # e_u^(0) of a user the model has never seen; trained when user_dropout > 0.
        self.unknown_user = _xavier_parameter(embed_dim)

    def user_embeddings0(self) -> torch.Tensor:
        """``e_u^(0)``; in training a ``user_dropout`` share of users gets ``unknown_user``.

        That makes the path of a brand-new user (unknown vector + GraphSAGE update from the
        items in its history, the user tower the service runs) a trained path.
        """
        users = self.user_embedding
        if self.training and self.user_dropout > 0.0:
            draw = torch.rand(self.num_users, device=users.device) < self.user_dropout
            users = torch.where(draw.unsqueeze(1), self.unknown_user.expand_as(users), users)
        return users

    def all_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(e_u^(l), e_i^(l)) for l = 0..L]`` of the whole graph."""
        items0, dropped = self.item_embeddings0()
        return self.sage.layers(self.user_embeddings0(), items0, self.adjacency, dropped)

    def read_out(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """The scored vector from ``[e^(0), ..., e^(L)]``: the last one, or their mean."""
        return layers[-1] if self.readout == "last" else torch.stack(layers).mean(dim=0)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.all_layers()
        return self.read_out([u for u, _ in layers]), self.read_out([i for _, i in layers])

    def new_item_layers(self, features: torch.Tensor) -> list[torch.Tensor]:
        """``[e^(0), ..., e^(L)]`` of items without neighbours (the GCN self path)."""
        layers = [self.new_items0(features)]
        for layer in range(self.num_layers):
            layers.append(self.sage.item_step(layer, layers[-1], None))
        return layers

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        """Self path of ``[fusion(x) ; unknown_item]``: equals ``forward()``'s cold-item rows."""
        return self.read_out(self.new_item_layers(features))

    def serving_towers(self) -> ServingTowers:
        """Item tower = the new-item path above; user tower = eq. 18's user side."""
        self.eval()
        with torch.no_grad():
            layers = self.all_layers()
            item_states = torch.cat([items for _, items in layers[:-1]], dim=1)
            user_states = layers[0][0]
        return ServingTowers(
            item_tower=SAGEItemTower(self),
            user_tower=SAGEUserTower(self),
            item_states=item_states,
            user_states=user_states,
            feature_dim=self.feature_dim,
        )


class SAGEItemTower(nn.Module):
    """features -> (final embedding, history state) for items with no interactions.

    The history state is the item's layer 0..L-1 embeddings concatenated (S = L * d): what a
    user update of eq. 18 aggregates.
    """

    def __init__(self, model: FusionGCN) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.model.new_item_layers(features)
        return self.model.read_out(layers), torch.cat(layers[:-1], dim=1)


class SAGEUserTower(nn.Module):
    """(history states, mask, stored e_u^(0), known flag) -> final user embedding (eq. 18).

    For a known user whose history is exactly its training items this reproduces the trained
    model's final user vector, so the same code serves stored users, users with fresh
    interactions and anonymous histories.
    """

    def __init__(self, model: FusionGCN) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        history_state: torch.Tensor,
        history_mask: torch.Tensor,
        user_state: torch.Tensor,
        user_known: torch.Tensor,
    ) -> torch.Tensor:
        dim, sage = self.model.embed_dim, self.model.sage
        users = [user_known * user_state + (1.0 - user_known) * self.model.unknown_user]
        weights = history_mask / history_mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        for layer in range(self.model.num_layers):
            layer_states = history_state[:, :, layer * dim : (layer + 1) * dim]
            neighbour_mean = torch.einsum("bh,bhd->bd", weights, layer_states)
            users.append(sage.user_step(layer, users[-1], neighbour_mean))
        return self.model.read_out(users)
