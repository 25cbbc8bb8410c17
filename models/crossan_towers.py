"""CROSSAN's exported towers (:class:`models.crossan.SequentialRecommender`): the item tower maps
raw per-layer encoder states to the item vector, the user tower runs the sequence encoder over a
served history."""

from __future__ import annotations

import torch
from torch import nn

from models.sequence import SequenceEncoder


class SequentialItemTower(nn.Module):
    """Raw features [B, F] -> (item vector, the same vector as its history state)."""

    def __init__(self, model: nn.Module) -> None:  # a SequentialRecommender
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        vector = model.content_vectors(
            features.reshape(-1, model.num_experts, model.num_layers, model.state_dim))
        return vector, vector


class SequentialUserTower(nn.Module):
    """History item vectors [B, H, d] (oldest first, H <= max_length) -> user vector; the
    stored user state and the known flag are accepted for the common contract and unused."""

    def __init__(self, encoder: SequenceEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, history_state: torch.Tensor, history_mask: torch.Tensor,
                user_state: torch.Tensor, user_known: torch.Tensor) -> torch.Tensor:
        user = self.encoder.last(history_state, history_mask > 0)
        # the exporter drops unused inputs; the contract has four, so the unused two stay
        return user + 0.0 * (user_state.sum(-1, keepdim=True) + user_known)
