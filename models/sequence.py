"""The sequential user encoder of CROSSAN (section 5): a SASRec-style causal Transformer.

Item vectors ``[B, L, d]`` of a user's history, oldest first and left-padded, plus learned
positions, dropout, ``num_blocks`` pre-norm Transformer blocks under a causal mask; the output at
position t is the user after the first t+1 items, and the output at the last position is the
user vector that ranks every item by inner product. Paper setting: d = 64, 2 blocks, 2 heads,
dropout 0.1.

Decisions: **left padding**, so the last position is always the newest item and a batch needs
no gather; padded positions are masked as keys and their outputs are ignored by the loss, and a
row of padding only (a user without history) gives the output of the positions alone (no NaN:
every query also attends to itself). Positions count back from the newest item, so "the
newest" has one embedding whatever the history's length.
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceEncoder(nn.Module):
    def __init__(
        self, dim: int = 64, max_length: int = 10, num_blocks: int = 2, num_heads: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.dim, self.max_length = dim, max_length
        self.positions = nn.Parameter(torch.empty(max_length, dim))
        nn.init.normal_(self.positions, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=dim, dropout=dropout,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        causal = torch.triu(torch.ones(max_length, max_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``items`` [B, L, d] (L <= max_length, left-padded), ``mask`` bool [B, L] True at real
        items -> every position's output [B, L, d]."""
        length = items.shape[1]
        if length > self.max_length:
            raise ValueError(f"history of {length} items; the encoder takes {self.max_length}")
        x = items * mask.unsqueeze(-1) + self.positions[self.max_length - length :]
        x = self.dropout(x)
        causal = self.causal[-length:, -length:]
        # a padded key is hidden from every query but itself: no row is fully masked
        keys = ~mask.unsqueeze(1).expand(-1, length, -1)
        index = torch.arange(length, device=items.device)
        itself = index.unsqueeze(0) == index.unsqueeze(1)  # (not torch.eye: ONNX-exportable)
        hidden = (causal.unsqueeze(0) | keys) & ~itself
        heads = self.blocks.layers[0].self_attn.num_heads
        attention = hidden.repeat_interleave(heads, dim=0)
        return self.norm(self.blocks(x, mask=attention))

    def last(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The user vector [B, d]: the output at the newest position."""
        return self.forward(items, mask)[:, -1]
