"""An item tower from token ids: the frozen text encoder, the pooling of its kept hidden states,
then a model's item side on those states (the path of a brand-new item given as raw text).

Training never runs this (it reads the cached states); export turns it into ONNX so that the
service can embed a title it has never seen. Inputs ``input_ids`` and ``attention_mask``
``[B, M, T]`` (M fields, each tokenised to T tokens); pooling and kept layers as in
:mod:`training.feature_sets` (``mean``: attention-masked mean; ``cls``: the first token).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

POOLINGS = ("mean", "cls")


def pool_states(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Hidden states [B, S, T, D] (S states of T tokens), attention mask [B, T] -> [B, S, D]:
    ``mean`` over the real tokens, or ``cls``, the first token. The state cache and the text
    tower both pool through here, so serving sees the states training was given."""
    if pooling == "cls":
        return hidden[:, :, 0]
    weights = mask[:, None, :, None].to(hidden.dtype)
    return (hidden * weights).sum(2) / weights.sum(2).clamp_min(1.0)


class TextItemTower(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        layers: Sequence[int],
        pooling: str,
        item_side: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be mean or cls, got {pooling!r}")
        self.encoder, self.layers, self.pooling = encoder, list(layers), pooling
        self.item_side = item_side

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled kept states, flattened per item: [B, M * K * D] (the training features)."""
        batch, fields, tokens = input_ids.shape
        output = self.encoder(input_ids=input_ids.reshape(-1, tokens),
                              attention_mask=attention_mask.reshape(-1, tokens),
                              output_hidden_states=True)
        hidden = torch.stack([output.hidden_states[i] for i in self.layers], 1)  # [BM,K,T,D]
        pooled = pool_states(hidden, attention_mask.reshape(-1, tokens), self.pooling)
        return pooled.reshape(batch, -1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """``(embedding, history_state, features)``: the item side's outputs and its input."""
        states = self.states(input_ids, attention_mask)
        embedding, history_state = self.item_side(states)
        return embedding, history_state, states
