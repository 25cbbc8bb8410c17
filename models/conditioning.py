"""Feature conditioning inside the model, fitted on training items only.

Raw multimodal features are badly scaled for fusion: on TikTok every visual feature is >= 0 with
row norm ~33 and an average cosine of 0.93 to the mean row (so all items point the same way),
while audio has an effective rank of about 2.5. Fed raw into a fusion tower, the content half of
an item vector starts ~175x larger than its ID half and one Adam step moves it by ~2 per
dimension. The conditioner is a module with buffers, so the exported item tower applies exactly
the same transform to the raw features of a brand-new item.

Modes (per modality, on the columns of ``modality_dims``):

* ``none``: identity.
* ``center_l2`` (default): subtract the training items' mean, then scale each row of the
  modality to unit L2 norm. What content kNN does; keeps every modality equally loud.
* ``whiten``: PCA whitening: centre, project on the principal axes whose variance is at least
  ``1e-4`` of the largest (audio on TikTok keeps few), divide by the square root of the
  variance, then unit L2 norm per modality. The output width per modality is the number of kept
  axes (``out_dims``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

CONDITIONING_MODES = ("none", "center_l2", "whiten")
_KEEP_VARIANCE = 1e-4
_EPS = 1e-8


class FeatureConditioner(nn.Module):
    """``x [B, F] -> conditioned x [B, sum(out_dims)]`` with statistics of the training items."""

    def __init__(
        self,
        features: torch.Tensor,
        modality_dims: Sequence[int],
        mode: str = "center_l2",
        fit_rows: torch.Tensor | None = None,
    ) -> None:
        """``features`` [I, F] of every item; ``fit_rows`` (bool [I]) the items to fit on
        (those with training interactions; all items when None)."""
        super().__init__()
        if mode not in CONDITIONING_MODES:
            raise ValueError(f"conditioning must be one of {CONDITIONING_MODES}, got {mode!r}")
        dims = [int(d) for d in modality_dims] or [int(features.shape[1])]
        if sum(dims) != features.shape[1]:
            raise ValueError(f"modality_dims {dims} do not sum to {features.shape[1]} columns")
        self.mode, self.in_dims = mode, dims
        fit = features if fit_rows is None or not bool(fit_rows.any()) else features[fit_rows]
        fit = fit.double()
        self.out_dims: list[int] = []
        start = 0
        for m, dim in enumerate(dims):
            block = fit[:, start : start + dim]
            mean = block.mean(0)
            if mode == "whiten":
                centred = block - mean
                cov = centred.T @ centred / max(len(centred) - 1, 1)
                variance, axes = torch.linalg.eigh(cov)
                keep = variance >= variance.max().clamp(min=_EPS) * _KEEP_VARIANCE
                projection = axes[:, keep] / variance[keep].sqrt()
            else:
                projection = torch.eye(dim, dtype=torch.float64)
            if mode == "none":
                mean = torch.zeros_like(mean)
            self.register_buffer(f"mean_{m}", mean.float(), persistent=False)
            self.register_buffer(f"projection_{m}", projection.float(), persistent=False)
            self.out_dims.append(int(projection.shape[1]))
            start += dim

    @property
    def out_dim(self) -> int:
        return sum(self.out_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        parts, start = [], 0
        for m, dim in enumerate(self.in_dims):
            block = x[:, start : start + dim] - getattr(self, f"mean_{m}")
            if self.mode == "whiten":
                block = block @ getattr(self, f"projection_{m}")
            norm = block.pow(2).sum(1, keepdim=True).add(_EPS).sqrt()
            parts.append(block / norm)
            start += dim
        return torch.cat(parts, dim=1)
