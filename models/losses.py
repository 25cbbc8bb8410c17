"""Ranking losses that models add to their training objective (MetaMMF eq. 19 and friends)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(user: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -ln sigma(y_ui - y_uj) with inner-product scores (eq. 19)."""
    margin = (user * positive).sum(-1) - (user * negative).sum(-1)
    return F.softplus(-margin).mean()  # softplus(-x) == -ln sigma(x), numerically stable

