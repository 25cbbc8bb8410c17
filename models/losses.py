"""Ranking losses that models add to their training objective (MetaMMF eq. 19 and friends)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(user: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -ln sigma(y_ui - y_uj) with inner-product scores (eq. 19)."""
    margin = (user * positive).sum(-1) - (user * negative).sum(-1)
    return F.softplus(-margin).mean()  # softplus(-x) == -ln sigma(x), numerically stable


def sampled_softmax_loss(user: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """Mean over the batch of ``-ln softmax`` of each row's positive against *every* sampled
    negative of the batch (row ``b``'s logits: ``<u_b, p_b>`` and ``<u_b, n_c>`` for all
    ``c``, over ``temperature``): the sampled softmax loss, with the negatives drawn
    uniformly, so no correction of the sampling is needed (Wu et al., "On the Effectiveness
    of Sampled Softmax Loss for Item Recommendation", 2022)."""
    positive_logit = (user * positive).sum(-1, keepdim=True)
    logits = torch.cat([positive_logit, user @ negatives.T], dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
