"""BPR loss with L2 regularisation (MetaMMF eq. 19)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(
    user: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of -ln sigma(y_ui - y_uj) with inner-product scores."""
    margin = (user * positive).sum(-1) - (user * negative).sum(-1)
    return F.softplus(-margin).mean()  # softplus(-x) == -ln sigma(x), numerically stable


def l2_penalty(parameters: list[torch.Tensor]) -> torch.Tensor:
    """||Phi||_2^2 over the given parameters."""
    return torch.stack([p.pow(2).sum() for p in parameters]).sum()
