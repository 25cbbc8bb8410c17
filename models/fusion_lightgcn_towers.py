"""Serving the LightGCN-backbone fusion models (:mod:`models.fusion_lightgcn`): the towers
exported to ONNX (the item tower embeds a new item from its raw features, the user tower a user
from its history's states), what the exporter takes, and the fold-in that embeds users as the
user tower does."""

from __future__ import annotations

import torch
from torch import nn

from models.base import BipartiteGraph, ServingTowers
from models.graph import lightgcn_layers, lightgcn_users_after
from models.history import HistoryMean, recency_weights


class FusionServing:
    """What :class:`models.fusion_lightgcn.FusionLightGCN` hands the exporter (its towers and
    the states the user tower aggregates) and the fold-in that embeds users as the user tower
    does (a mixin)."""

    @torch.no_grad()
    def user_embeddings_after(self, pairs: torch.Tensor) -> torch.Tensor:
        """The users once ``pairs`` join their histories, as the user tower embeds them: the
        ID half by :func:`lightgcn_users_after`, the content half from the whole history's
        mean content (``beside``)."""
        self.eval()
        users = self()[0]
        content, _ = self._graph_content()
        layers = lightgcn_layers(self.user_embedding, self._items0(content), self.adjacency,
                                 self.num_layers)
        item_layers = [items for _, items in layers[:-1]]
        if self.combine == "propagate":
            return lightgcn_users_after(users, self.user_embedding, item_layers,
                                        self.train_edges, pairs)
        ids = lightgcn_users_after(users[:, self.content_width :], self.user_embedding,
                                   item_layers, self.train_edges, pairs)
        pairs = pairs.long().to(users.device)
        changed = torch.unique(pairs[:, 0])
        union = BipartiteGraph(self.num_users, self.num_items,
                               torch.cat([self.train_edges.to(users.device), pairs.T], dim=1))
        history = HistoryMean(union, self.history_mean.decay).to(users.device)
        mean = history.user_mean(content)[changed]
        out = torch.cat([users[:, : self.content_width], ids], dim=1)
        out[changed, : self.content_width] = self.user_content(mean)
        return out

    def item_states(self) -> torch.Tensor:
        """What the user tower aggregates per trained item: ``[e_m ;] e^(k) / sqrt(deg)``."""
        with torch.no_grad():
            content, history = self._graph_content()
            layers = lightgcn_layers(
                self.user_embedding, self._items0(content), self.adjacency, self.num_layers
            )
            items = [item for _, item in layers[:-1]]
            state = torch.cat(items, dim=1) / self.item_degree.sqrt().unsqueeze(1)
            if history is not None:
                state = torch.cat([content, state], dim=1)
            return state

    def serving_towers(self) -> ServingTowers:
        self.eval()
        return ServingTowers(
            item_tower=LightGCNItemTower(self),
            user_tower=LightGCNUserTower(self),
            item_states=self.item_states(),
            user_states=self.user_embedding.detach().clone(),
            feature_dim=self.feature_dim,
        )


class LightGCNItemTower(nn.Module):
    """Raw features -> (final vector of a new item, its history state)."""

    def __init__(self, model: nn.Module) -> None:  # a FusionLightGCN
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        conditioned = model.conditioner(features)
        content = model.content(conditioned)
        embedding = model.new_item_vectors(content, model.cold_scale,
                                           model.place_new_items(conditioned))
        # A new item has degree 1 once a user holds it, and no propagated layers beyond 0.
        layer0 = model.unknown_item.expand(features.shape[0], -1)
        if model.combine == "propagate":
            layer0 = torch.cat([model.warm_content * content, layer0], dim=1)
        zeros = [torch.zeros_like(layer0)] * (model.num_layers - 1)
        state = torch.cat([layer0, *zeros], dim=1)
        if model.combine == "beside":
            state = torch.cat([content, state], dim=1)
        return embedding, state


class LightGCNUserTower(nn.Module):
    """History states -> user vector: LightGCN's user side over the given history.

    With ``n`` history items, ``e_u^(k+1) = sum_h state_k(h) / sqrt(n)`` and the readout is the
    mean of layers ``0..L`` (``e_u^(0)`` the stored state or the unknown user). For a known user
    and its training items this is exactly the trained vector. ``beside`` prepends ``A m_u``.
    """

    def __init__(self, model: nn.Module) -> None:  # a FusionLightGCN
        super().__init__()
        self.model = model

    def forward(
        self,
        history_state: torch.Tensor,
        history_mask: torch.Tensor,
        user_state: torch.Tensor,
        user_known: torch.Tensor,
    ) -> torch.Tensor:
        model = self.model
        count = history_mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        offset = model.content_width if model.combine == "beside" else 0
        width = model.id_dim if model.combine == "beside" else model.embed_dim
        layers = [user_known * user_state + (1.0 - user_known) * model.unknown_user]
        for k in range(model.num_layers):
            states = history_state[:, :, offset + k * width : offset + (k + 1) * width]
            layers.append(torch.einsum("bh,bhd->bd", history_mask, states) / count.sqrt())
        users = torch.stack(layers).mean(dim=0)
        if model.combine == "propagate":
            return users
        content = history_state[:, :, : model.content_width]
        weights = recency_weights(history_mask, model.history_mean.decay)  # the mask at decay 1
        mean_content = torch.einsum("bh,bhd->bd", weights, content) / weights.sum(
            dim=1, keepdim=True).clamp(min=1e-12)
        return torch.cat([model.user_content(mean_content), users], dim=1)
