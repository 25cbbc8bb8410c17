"""MetaMMF fusion on a LightGCN backbone: content that counts, and a trained path for new items.

A variant the MetaMMF paper allows (section 4.4 calls the fused item representation
model-agnostic: any CF backbone can take ``[e_m ; e_c]``), not the paper's eq. 18. The faithful
GraphSAGE model stays beside it as ``metammf_gcn``. Why a different backbone: eq. 18's mean over
neighbours removes item degree, and on TikTok popularity alone scores 0.0597 Recall@20, 64% of
LightGCN. LightGCN's symmetric normalised propagation with a layer-mean readout keeps it.

Item ``i`` is eq. 2's ``[e_m_i ; e_c_i]``: ``e_m_i = exp(log_scale) * fusion(cond(x_i))`` with
MetaMMF's item-specific fusion (eqs. 7-15, unchanged; or a static control) over features
conditioned inside the model (:mod:`models.conditioning`), and a learned scale initialised so
that ``e_m`` starts at the norm of the ID half. ``d_m = content_dim`` (default ``embed_dim // 2``)
and ``d_c = embed_dim - d_m``. Two ways to combine them (``combine``):

* ``"beside"`` (default): only the ID half is propagated (LightGCN on ``e_u`` and ``e_c``, both
  ``d_c``-d). The user's content half is ``A m_u``, with ``m_u`` the mean ``e_m`` of the
  user's training items and ``A`` a learned ``d_m x d_m`` map (identity at start): a content
  kNN with a learned metric. Score ``y_ui = (A m_u) . e_m_i + u_c . i_c``. In training the
  positive is left out of ``m_u`` (:meth:`FusionLightGCN._leave_one_out`): otherwise the
  content half learns to find the positive in the user's own history and collapses.
* ``"propagate"``: ``[e_m ; e_c]`` is layer 0 of the items, a free ``d``-d vector that of the
  users, and the whole vector is propagated; the user's content comes through the graph.

Two options decided on validation (TikTok numbers in docs/decisions.md):

* ``warm_content`` (w): warm items carry ``w * e_m`` (new items always the full ``e_m``); at 0
  warm items are ranked by the IDs alone and the content serves new items only.
* ``knn_weight`` (> 0, ``beside`` only): the content half also holds the unit-norm conditioned
  features, with ``gamma * normalise(mean of the history's features)`` on the user side
  (gamma learned from ``knn_weight``): a training-free content kNN inside the model, so the
  fused content only has to add to it. ``knn_scale`` (a buffer, 1 while training) multiplies
  gamma; it is chosen on validation after training, because training pairs, which the ID
  half can memorise, pay the kNN part less than unseen pairs do (on MicroLens-50K the learned
  gamma was a quarter to an eighth of the validation-best one).

New items (no training interaction: held-out ``cold_items`` or items that simply have none)
take the learned ``unknown_item`` vector instead of ``e_c`` and have no neighbours, so their
final vector is the LightGCN self path ``x^(0) / (L + 1)`` of ``[e_m ; unknown]``; the exported
item tower computes exactly this from raw features. Two things make it a trained path,
``new_item_weight`` (an auxiliary BPR loss on feature-only vectors) and ``new_item_dropout``
(positives and negatives scored as new items): :mod:`models.fusion_lightgcn_losses`.

``cold_scale`` (a buffer, 1 while training) multiplies the whole vector of a new item, so it
sets the level of every new item's score against the warm ones: how strongly new items compete
with popular warm items is a product decision, chosen on validation (:mod:`training.calibration`)
and stored in the weights. (Scaling only the content half was tried first: the unknown ID half,
trained by ``new_item_dropout`` on popularity-weighted positives, then kept new items in 6% of
the top-20 slots even at the smallest scale.)

``new_item_fused_weight`` (lambda, a buffer; 1 while training) weights ``e_m`` in the vectors of
new items outside training, the kNN part beside it kept whole. The fused part is fitted on warm
items only and, on TikTok, ranks unseen items worse than the kNN part alone
(docs/decisions.md): at 0 a new item is ranked among new items exactly as content kNN ranks it,
while warm items keep ``warm_content * e_m``.

``item_graph_k`` (> 0, ``beside`` only) adds FREEDOM's frozen item-item content graph: see
:mod:`models.fusion_lightgcn_graph`.

``history_decay`` (in (0, 1], 1 = the plain mean) weighs the items of a user's history by
recency in its content half (``m_u`` and the kNN profile): an item with ``n`` newer items in
the history weighs ``decay ** n`` (:class:`models.history.HistoryMean`); the user tower applies
the same weights to a served history (oldest first), and taking the positive out of a training
user's mean removes its own weight. On data without an order (TikTok's rows) it stays 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.base import (
    BipartiteGraph,
    Recommender,
    item_mask,
)
from models.conditioning import FeatureConditioner
from models.fusion_lightgcn_config import COMBINES
from models.fusion_lightgcn_graph import FusionContentGraph
from models.fusion_lightgcn_losses import FusionLosses
from models.fusion_lightgcn_towers import FusionServing
from models.fusion_lightgcn_views import FusionModalityViews
from models.graph import (
    SymmetricAdjacency,
    degree_sensitive_sample,
    lightgcn_propagate,
)
from models.history import HistoryMean
from models.item_graph import ContentNeighbourGraph
from models.metammf import _check_features, _xavier_parameter, drop_item_edges

FusionFactory = Callable[[Sequence[int], int], nn.Module]


class FusionLightGCN(FusionModalityViews, FusionLosses, FusionContentGraph, FusionServing,
                     Recommender):
    """Fused item content ``e_m`` with LightGCN-propagated IDs (see the module docstring)."""

    uses_features = True
    item_tables = ("item_id_embedding",)

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int],
        *,
        fusion_factory: FusionFactory,
        embed_dim: int = 64,
        content_dim: int | None = None,
        num_layers: int = 2,
        combine: str = "beside",
        conditioning: str = "center_l2",
        warm_content: float = 1.0,
        knn_weight: float = 0.0,
        new_item_weight: float = 0.5,
        new_item_dropout: float = 0.1,
        new_item_fused_weight: float = 1.0,
        user_dropout: float = 0.0,
        item_graph_k: int = 0,
        item_graph_weights: Sequence[float] | None = None,
        item_graph_layers: int = 1,
        item_graph_source: str = "features",
        item_graph_warm: bool = True,
        edge_dropout: float = 0.0,
        history_decay: float = 1.0,
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        features = _check_features(item_features, modality_dims, graph.num_items)
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        if embed_dim < 2 or num_layers < 0:
            raise ValueError(f"need embed_dim >= 2 and num_layers >= 0, got {embed_dim}, "
                             f"{num_layers}")
        for name, share in (("new_item_dropout", new_item_dropout),
                            ("user_dropout", user_dropout), ("edge_dropout", edge_dropout)):
            if not 0.0 <= share < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {share}")
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.embed_dim, self.num_layers, self.combine = embed_dim, num_layers, combine
        self.content_dim = content_dim or embed_dim // 2  # d_m
        if not 0 < self.content_dim < embed_dim:
            raise ValueError(f"content_dim must be in (0, {embed_dim}), got {content_dim}")
        self.id_dim = embed_dim - self.content_dim  # d_c
        self.warm_content = float(warm_content)
        if knn_weight < 0.0 or (knn_weight > 0.0 and combine != "beside"):
            raise ValueError("knn_weight must be >= 0, and > 0 only with combine='beside'")
        self.knn = knn_weight > 0.0
        self.new_item_weight = float(new_item_weight)
        self.new_item_dropout = float(new_item_dropout)
        if new_item_fused_weight < 0.0:
            raise ValueError(f"new_item_fused_weight must be >= 0, got {new_item_fused_weight}")
        self.user_dropout = float(user_dropout)
        self.feature_dim = int(features.shape[1])

        graph = drop_item_edges(graph, item_mask(graph.num_items, cold_items))
        new = graph.item_degree() == 0  # held out, or simply never interacted with in training
        self.register_buffer("new_mask", new, persistent=False)
        self.register_buffer("item_degree", graph.item_degree().clamp(min=1).float(),
                             persistent=False)

        self.conditioner = FeatureConditioner(features, modality_dims, conditioning, ~new)
        self.register_buffer("conditioned", self.conditioner(features), persistent=False)
        self.modality_dims = list(self.conditioner.out_dims)  # the views act after conditioning
        self.fusion = fusion_factory(self.conditioner.out_dims, self.content_dim)

        user_dim = self.id_dim if combine == "beside" else embed_dim
        self.user_embedding = _xavier_parameter(graph.num_users, user_dim)  # e_u^(0)
        self.item_id_embedding = _xavier_parameter(graph.num_items, self.id_dim)  # e_c
        self.unknown_item = _xavier_parameter(self.id_dim)
        self.unknown_user = _xavier_parameter(user_dim)
        self.adjacency = SymmetricAdjacency(graph)
        self.train_graph, self.edge_dropout = graph, float(edge_dropout)
        self.train_adjacency = self.adjacency  # a pruned copy while training (edge_dropout)
        self.register_buffer("train_edges", graph.edge_index.long().cpu(), persistent=False)
        if combine == "beside":
            self.history_mean = HistoryMean(graph, history_decay)
            user_degree = torch.bincount(graph.edge_index[0].long().cpu(),
                                         minlength=graph.num_users).float()
            self.register_buffer("user_degree", user_degree, persistent=False)
            self.user_content_map = nn.Parameter(torch.eye(self.content_dim))  # A
        if self.knn:  # gamma, learned in log space like the content scale
            self.log_knn_weight = nn.Parameter(torch.tensor(math.log(knn_weight)))
            # the kNN part is fixed: its items and their history means are computed once
            self.register_buffer("knn_items", torch.empty(0), persistent=False)
            self.register_buffer("knn_history", torch.empty(0), persistent=False)
            self.knn_items, self.knn_history = self._knn_part(self.conditioned)
            # a factor on gamma chosen on validation after training (training.calibration)
            self.register_buffer("knn_scale", torch.ones(()))
        self.content_width = self.content_dim + (self.conditioner.out_dim if self.knn else 0)
        # e_m starts at the typical norm of a Xavier ID row (~0.1 on TikTok), not ~175x above.
        with torch.no_grad():
            fused_norm = self.fusion(self.conditioned[~new]).norm(dim=1).mean().clamp(min=1e-6)
        target = math.sqrt(self.id_dim * 2.0 / (graph.num_items + self.id_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(target / float(fused_norm))))
        self.register_buffer("cold_scale", torch.ones(()))
        self.register_buffer("new_item_fused_weight", torch.tensor(float(new_item_fused_weight)))
        self.item_graph: ContentNeighbourGraph | None = None
        if item_graph_k > 0:
            self._init_item_graph(item_graph_k, item_graph_weights, item_graph_layers,
                                  item_graph_source, ~new)
        self.item_graph_warm = bool(item_graph_warm)

    view_buffer = "conditioned"

    def begin_epoch(self) -> None:
        if self.item_graph is not None and self.item_graph_source == "fused":
            with torch.no_grad():
                self.graph_fusion.load_state_dict(self.fusion.state_dict())
                self.item_graph.build(self.graph_keys(self.conditioned))
        if self.edge_dropout > 0.0:
            pruned = degree_sensitive_sample(self.train_graph, 1.0 - self.edge_dropout)
            self.train_adjacency = SymmetricAdjacency(pruned).to(self.user_embedding.device)

    def _knn_part(self, conditioned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed kNN part: unit-norm features and their mean over each user's history."""
        items = F.normalize(conditioned, dim=1)
        return items, self.history_mean.user_mean(items)

    # ---- pieces ------------------------------------------------------------------------

    def fused(self, conditioned: torch.Tensor) -> torch.Tensor:
        """``e_m`` [B, d_m] of conditioned features (eqs. 7-15 times the learned scale)."""
        return self.log_scale.exp() * self.fusion(conditioned)

    def content(self, conditioned: torch.Tensor) -> torch.Tensor:
        """The content half [B, content_width] of conditioned features: ``e_m``, and with
        ``knn_weight`` the unit-norm conditioned features beside it."""
        fused = self.fused(conditioned)
        if not self.knn:
            return fused
        return torch.cat([fused, F.normalize(conditioned, dim=1)], dim=1)

    def _graph_content(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(content [I, w], mean content of each user's history [U, w])`` of the trained
        items (``beside``; the history is None for ``propagate``). Equal to
        :meth:`content` of the stored features, with the fixed kNN part read from buffers."""
        fused = self.fused(self.conditioned)
        if self.combine == "propagate":
            return fused, None
        history = self.history_mean.user_mean(fused)
        if not self.knn:
            return fused, history
        return (torch.cat([fused, self.knn_items], dim=1),
                torch.cat([history, self.knn_history], dim=1))

    def user_content(self, mean_content: torch.Tensor) -> torch.Tensor:
        """The user's content half from the mean content of its history: ``A m_u``, and with
        ``knn_weight`` ``gamma * normalise(mean of the features)`` (a content kNN inside)."""
        fused = mean_content[:, : self.content_dim] @ self.user_content_map
        if not self.knn:
            return fused
        knn = F.normalize(mean_content[:, self.content_dim :], dim=1)
        return torch.cat([fused, self.knn_scale * self.log_knn_weight.exp() * knn], dim=1)

    def _items0(self, content: torch.Tensor | None) -> torch.Tensor:
        """Layer 0 of the propagated item part: the ID half (new items: unknown), and with
        ``propagate`` the warm-weighted ``e_m`` before it."""
        ids = torch.where(
            self.new_mask.unsqueeze(1),
            self.unknown_item.expand_as(self.item_id_embedding),
            self.item_id_embedding,
        )
        if self.combine == "beside":
            return ids
        return torch.cat([self.warm_content * content, ids], dim=1)

    def _users0(self) -> torch.Tensor:
        users = self.user_embedding
        if self.training and self.user_dropout > 0.0:
            draw = torch.rand(self.num_users, device=users.device) < self.user_dropout
            users = torch.where(draw.unsqueeze(1), self.unknown_user.expand_as(users), users)
        return users

    def new_item_vectors(
        self, content: torch.Tensor, scale: torch.Tensor | float = 1.0,
        neighbours: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final vectors [B, d] of items without interactions: ``scale`` times the self path of
        ``[e_m ; unknown]`` (``beside`` propagates only the ID half, so ``e_m`` is not averaged
        over layers there), the item graph's ``neighbours`` part added to the ID half. Outside
        training ``e_m`` is weighted by ``new_item_fused_weight`` (with ``knn_weight`` the kNN
        part beside it is kept whole)."""
        if not self.training:
            content = torch.cat([self.new_item_fused_weight * content[:, : self.content_dim],
                                 content[:, self.content_dim :]], dim=1)
        unknown = self.unknown_item.expand(content.shape[0], -1) / (self.num_layers + 1)
        if neighbours is not None:
            unknown = unknown + neighbours
        if self.combine == "propagate":
            content = content / (self.num_layers + 1)
        return scale * torch.cat([content, unknown], dim=1)

    def _propagate(
        self,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(users [U, d], items [I, d], content, history)`` before the new-item scale; see
        :meth:`_graph_content` for the last two."""
        content, history = self._graph_content()
        if history is not None:  # beside: the IDs alone (with the item graph's part)
            users, items = self._id_propagation()
        else:
            users, items = lightgcn_propagate(
                self._users0(), self._items0(content), self._adjacency(), self.num_layers
            )
        if history is not None:  # beside: the content halves go in front of the IDs
            users = torch.cat([self.user_content(history), users], 1)
            items = torch.cat([self.warm_content * content, items], 1)
        return users, items, content, history

    # ---- the Recommender protocol ------------------------------------------------------

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items, content, _ = self._propagate()
        if bool(self.new_mask.any()):
            new_rows = self.new_item_vectors(content, self.cold_scale,
                                             self._as_new(slice(None)))
            items = torch.where(self.new_mask.unsqueeze(1), new_rows, items)
        return users, items

    def _adjacency(self) -> SymmetricAdjacency:
        """The user-item graph: pruned while training with ``edge_dropout``, else whole."""
        return self.train_adjacency if self.training else self.adjacency

    def _id_propagation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``beside``: the ID halves (users, items), propagated, with the item graph's part
        added to the items; once per training step. The ID table goes in as it is: an item
        without training interactions has no edge, so its row reaches no user, and every
        reader replaces its final row by the new-item path (``_items0`` would cost a copy of
        the table each step)."""
        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            users, items = lightgcn_propagate(self._users0(), self.item_id_embedding,
                                              self._adjacency(), self.num_layers)
            parts = self._graph_parts()
            if parts is None or not self.item_graph_warm:
                return users, items
            return users, items + parts[0]

        return self.step_memo("id_propagation", compute)

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features [B, F] -> final vectors; equals ``forward()``'s rows of new items."""
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"features must be [B, {self.feature_dim}], got "
                             f"{tuple(features.shape)}")
        conditioned = self.conditioner(features.to(self.conditioned.dtype))
        return self.new_item_vectors(self.content(conditioned), self.cold_scale,
                                     self.place_new_items(conditioned))

    @torch.no_grad()
    def diagnostics(self) -> dict[str, Any]:
        """Scale of the content half against the ID half, and MetaMMF's dynamic part."""
        content = self.fused(self.conditioned)
        warm = ~self.new_mask
        out: dict[str, Any] = {
            "content_scale": float(self.log_scale.exp()),
            "knn_weight": float(self.log_knn_weight.exp()) if self.knn else 0.0,
            "knn_scale": float(self.knn_scale) if self.knn else 1.0,
            "cold_scale": float(self.cold_scale),
            "content_norm_warm": float(content[warm].norm(dim=1).mean()),
            "id_norm_warm": float(self.item_id_embedding[warm].norm(dim=1).mean()),
        }
        if self.item_graph is not None:
            graph_part = self._graph_parts()[0][warm]
            out["item_graph_norm_warm"] = float(graph_part.norm(dim=1).mean())
        if hasattr(self.fusion, "dynamic_sizes"):
            out["fusion_layers"] = self.fusion.dynamic_sizes(self.conditioned[warm])
        return out
