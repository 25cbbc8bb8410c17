"""Multimodal fusion: MetaMMF's item-specific dynamic fusion (section 4.1-4.3) and static controls.

Every fusion module maps the concatenated modality features of a batch of items,
``x [B, F]`` with ``F = d_v + d_a + d_t``, to a joint representation ``e_m [B, out_dim]``.

* :class:`MetaMMFFusion` (eqs. 7, 10-15): a meta information extractor turns each item's
  features into ``s_i`` (eq. 7), and every layer ``n`` of the fusion tower uses its own weight
  matrix ``W^n_i = W^n + T^n x3 s_i`` (eq. 11), with ``T^n`` CP-decomposed (eqs. 13-15).
* :class:`EarlyFusion`, :class:`LateFusion`, :class:`HybridFusion`: the static controls of
  Table 3, with the same tower shape and one item-shared weight matrix per layer.

Common tower shape (section 4.2): the first hidden layer is the broadest (``first_hidden``),
each next hidden layer halves, never below ``out_dim``; the last layer outputs ``out_dim``;
LeakyReLU between layers and none after the last; no biases (the paper omits them).
Initialisation is Xavier-uniform for every matrix (section 5.2), zeros for biases.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

FUSION_MODES = ("cp", "full")
FUSION_KINDS = ("metammf", "early", "late", "hybrid")


class StaticFusionConfig(BaseModel):
    """The fusion tower's hyperparameters (N layers, the first hidden width), shared by every
    fused model; the registry passes them to :func:`build_fusion`."""

    fusion_layers: int = Field(1, ge=1)
    first_hidden: int = Field(256, ge=1)


class MetaFusionConfig(StaticFusionConfig):
    """MetaMMF's fusion on top (section 5.2's TikTok setting: d_s = 5, R = 16)."""

    meta_dim: int = Field(5, ge=1)
    meta_hidden: int = Field(64, ge=1)
    rank: int = Field(16, ge=1)
    fusion_mode: Literal[FUSION_MODES] = "cp"
    static_weight: bool = True


def tower_widths(in_dim: int, out_dim: int, num_layers: int, first_hidden: int) -> list[int]:
    """Layer widths ``[in_dim, h_1, ..., h_{N-1}, out_dim]`` of an ``N``-layer fusion tower.

    ``h_1 = first_hidden`` and ``h_{k+1} = h_k / 2``, never below ``out_dim`` (section 4.2):
    ``tower_widths(2276, 32, 4, 1024) == [2276, 1024, 512, 256, 32]`` (the paper's MovieLens
    tower) and ``tower_widths(384, 32, 1, 256) == [384, 32]`` (TikTok).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    hidden = [max(out_dim, first_hidden // 2**k) for k in range(num_layers - 1)]
    return [in_dim, *hidden, out_dim]


def _xavier_(param: torch.Tensor) -> torch.Tensor:
    return nn.init.xavier_uniform_(param)


class MetaInfoExtractor(nn.Module):
    """Meta information extractor (eq. 7): ``s_i = phi_out(phi_mid(phi_in(x_i)))``.

    Three ``Linear`` layers with bias, each followed by ReLU: the paper says every layer has its
    own weight, bias and activation and that ReLU is used uniformly, so the output ``s_i`` is
    non-negative too. ``F -> hidden -> hidden -> meta_dim`` (defaults 64 and ``d_s = 5``).
    """

    def __init__(self, in_dim: int, hidden: int = 64, meta_dim: int = 5) -> None:
        super().__init__()
        self.in_dim, self.hidden, self.meta_dim = in_dim, hidden, meta_dim
        self.phi_in = nn.Linear(in_dim, hidden)
        self.phi_mid = nn.Linear(hidden, hidden)
        self.phi_out = nn.Linear(hidden, meta_dim)
        for layer in (self.phi_in, self.phi_mid, self.phi_out):
            _xavier_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, F] -> s [B, meta_dim]``."""
        return self.after_input(self.phi_in(x))

    def after_input(self, h: torch.Tensor) -> torch.Tensor:
        """``s`` from ``phi_in``'s affine output [B, hidden] (the layers after it)."""
        h = torch.relu(self.phi_mid(torch.relu(h)))
        return torch.relu(self.phi_out(h))


class MetaFusionLayer(nn.Module):
    """One dynamically parameterised layer: ``y_i = W_i x_i`` with ``W_i = W + T x3 s_i``.

    Eqs. 8-9 (one layer), 11 (layer ``n`` of a tower) and 13-15 (CP decomposition). Shapes:
    ``W [out, in]``; ``T [out, in, d_s]``; CP factors ``A [out, R]``, ``B [in, R]``,
    ``C [d_s, R]`` with ``T[p, q, z] = sum_r A[p, r] B[q, r] C[z, r]`` (eq. 14).

    ``mode="cp"`` (default) never builds a per-item matrix. Since
    ``(T x3 s) x = sum_r a_r (c_r . s)(b_r . x)``, a batch is computed as
    ``x W^T + ((x B) * (s C)) A^T``: ``O(R (P + Q + Z))`` per item instead of ``O(P Q Z)``.

    ``mode="full"`` keeps a dense ``T`` and builds every item's ``W_i`` with ``einsum`` (the
    "without CP" ablation of Table 4 / Fig. 6, and the test oracle for the factored form).

    ``static_weight=False`` is the Table 5 ablation "without static weights": ``W_i = T x3 s_i``
    and there is no ``W`` parameter at all. No bias (section 4.2).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        meta_dim: int = 5,
        rank: int = 16,
        mode: str = "cp",
        static_weight: bool = True,
    ) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"mode must be one of {FUSION_MODES}, got {mode!r}")
        self.in_dim, self.out_dim, self.meta_dim = in_dim, out_dim, meta_dim
        self.rank, self.mode, self.static_weight = rank, mode, static_weight
        if static_weight:
            self.W = nn.Parameter(_xavier_(torch.empty(out_dim, in_dim)))
        else:
            self.register_parameter("W", None)
        if mode == "cp":
            self.A = nn.Parameter(_xavier_(torch.empty(out_dim, rank)))
            self.B = nn.Parameter(_xavier_(torch.empty(in_dim, rank)))
            self.C = nn.Parameter(_xavier_(torch.empty(meta_dim, rank)))
        else:
            self.T = nn.Parameter(_xavier_(torch.empty(out_dim, in_dim, meta_dim)))

    def cp_tensor(self) -> torch.Tensor:
        """The dense ``T = [[A, B, C]]`` [out, in, d_s] of eqs. 13-14 (``mode="cp"`` only)."""
        if self.mode != "cp":
            raise ValueError("cp_tensor() needs mode='cp'; a 'full' layer stores T directly")
        return torch.einsum("pr,qr,zr->pqz", self.A, self.B, self.C)

    def item_weights(self, s: torch.Tensor) -> torch.Tensor:
        """Per-item matrices ``W_i`` [B, out, in] (eq. 15). Materialises them: inspection only."""
        tensor = self.cp_tensor() if self.mode == "cp" else self.T
        weights = torch.einsum("pqz,bz->bpq", tensor, s)
        return weights + self.W if self.W is not None else weights

    def dynamic_norms(self, s: torch.Tensor) -> torch.Tensor:
        """``||T x3 s_i||_F`` [B]: the size of each item's dynamic part of ``W_i`` (eq. 11).

        In CP form ``T x3 s = A diag(C^T s) B^T``, so its squared norm is
        ``g^T (A^T A * B^T B) g`` with ``g = C^T s``: no per-item matrix is built.
        """
        if self.mode == "full":
            return torch.einsum("pqz,bz->bpq", self.T, s).flatten(1).norm(dim=1)
        g = s @ self.C
        gram = (self.A.t() @ self.A) * (self.B.t() @ self.B)
        return ((g @ gram) * g).sum(1).clamp(min=0).sqrt()

    def static_norm(self) -> float:
        """``||W||_F`` (0 without static weights)."""
        return 0.0 if self.W is None else float(self.W.detach().norm())

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``x [B, in]``, ``s [B, d_s]`` -> ``[B, out]``."""
        if self.mode == "full":
            return torch.einsum("bpq,bq->bp", self.item_weights(s), x)
        return self.from_products(x @ self.B, None if self.W is None else x @ self.W.t(), s)

    def from_products(
        self, xb: torch.Tensor, xw: torch.Tensor | None, s: torch.Tensor
    ) -> torch.Tensor:
        """``mode="cp"`` output from ``x B`` [B, R] and ``x W^T`` [B, out] (None without
        static weights): ``x W^T + ((x B) * (s C)) A^T``."""
        out = (xb * (s @ self.C)) @ self.A.t()
        return out if xw is None else out + xw

    def to_full(self) -> MetaFusionLayer:
        """A ``mode="full"`` layer holding exactly this layer's ``W`` and ``T = cp_tensor()``."""
        ref = next(self.parameters())
        full = MetaFusionLayer(
            self.in_dim, self.out_dim, self.meta_dim, self.rank, "full", self.static_weight
        ).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            full.T.copy_(self.cp_tensor() if self.mode == "cp" else self.T)
            if self.W is not None and full.W is not None:
                full.W.copy_(self.W)
        return full


class MetaMMFFusion(nn.Module):
    """MetaMMF dynamic fusion (eqs. 10-12): ``e_m = W^N_i s(... s(W^1_i x_i))``.

    ``s_i`` comes from one :class:`MetaInfoExtractor` shared by all layers (eq. 7 applied to the
    concatenated features, section 4.2); layer ``n`` is a :class:`MetaFusionLayer` with its own
    ``W^n`` and ``T^n``; sigma is LeakyReLU (``negative_slope``, PyTorch's default 0.01: the paper
    does not give one) between layers and nothing after the last; widths per
    :func:`tower_widths`.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 32,
        num_layers: int = 1,
        first_hidden: int = 256,
        meta_dim: int = 5,
        meta_hidden: int = 64,
        rank: int = 16,
        mode: str = "cp",
        static_weight: bool = True,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_layers = in_dim, out_dim, num_layers
        self.first_hidden, self.meta_hidden = first_hidden, meta_hidden
        self.meta_dim, self.rank, self.mode = meta_dim, rank, mode
        self.static_weight, self.negative_slope = static_weight, negative_slope
        self.widths = tower_widths(in_dim, out_dim, num_layers, first_hidden)
        self.extractor = MetaInfoExtractor(in_dim, meta_hidden, meta_dim)
        self.layers = nn.ModuleList(
            MetaFusionLayer(p, q, meta_dim, rank, mode, static_weight)
            for p, q in pairwise(self.widths)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_dim] -> e_m [B, out_dim]``."""
        first = self.layers[0]
        if first.mode == "cp":
            # x meets three weights (phi_in, B^1, W^1): one product with them side by side gives
            # the same values in one pass over x, the widest operand, forward and backward
            # (measured: 15-25% off the fusion's step on TikTok's and MicroLens-50K's items)
            weights = [self.extractor.phi_in.weight, first.B.t()]
            weights += [] if first.W is None else [first.W]
            parts = (x @ torch.cat(weights).t()).split([len(w) for w in weights], dim=1)
            s = self.extractor.after_input(parts[0] + self.extractor.phi_in.bias)
            h = first.from_products(parts[1], parts[2] if len(parts) > 2 else None, s)
        else:
            s = self.extractor(x)
            h = first(x, s)
        for layer in self.layers[1:]:
            h = layer(nn.functional.leaky_relu(h, self.negative_slope), s)
        return h

    @torch.no_grad()
    def dynamic_sizes(self, x: torch.Tensor) -> list[dict[str, float]]:
        """Per layer: mean ``||T x3 s_i||`` over the items ``x`` against ``||W||``.

        Shows whether the item-specific part is used at all (a ratio near 0 means the layer
        behaves like static early fusion).
        """
        s = self.extractor(x)
        return [
            {
                "dynamic_mean": float(layer.dynamic_norms(s).mean()),
                "static": layer.static_norm(),
            }
            for layer in self.layers
        ]

    def to_full(self) -> MetaMMFFusion:
        """An equivalent ``mode="full"`` fusion: same extractor and ``W``, ``T = cp_tensor()``."""
        full = copy.deepcopy(self)
        full.mode = "full"
        full.layers = nn.ModuleList(layer.to_full() for layer in self.layers)
        return full


def _static_tower(
    in_dim: int, out_dim: int, num_layers: int, first_hidden: int, negative_slope: float
) -> nn.Sequential:
    widths = tower_widths(in_dim, out_dim, num_layers, first_hidden)
    modules: list[nn.Module] = []
    for n, (p, q) in enumerate(pairwise(widths)):
        linear = nn.Linear(p, q, bias=False)
        _xavier_(linear.weight)
        modules.append(linear)
        if n < num_layers - 1:
            modules.append(nn.LeakyReLU(negative_slope))
    return nn.Sequential(*modules)


class EarlyFusion(nn.Module):
    """Static early (feature-level) fusion, Table 3: one MLP on the concatenated features.

    Same tower as MetaMMF (:func:`tower_widths`, LeakyReLU between layers, no bias) with one
    item-shared matrix per layer, i.e. MetaMMF with ``T = 0``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 32,
        num_layers: int = 1,
        first_hidden: int = 256,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.tower = _static_tower(in_dim, out_dim, num_layers, first_hidden, negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_dim] -> [B, out_dim]``."""
        return self.tower(x)


class LateFusion(nn.Module):
    """Static late (decision-level) fusion, Table 3: one tower per modality, outputs averaged.

    ``x`` is split into ``modality_dims`` consecutive blocks (the order of the concatenation);
    modality ``k`` gets its own tower ``d_k -> first_hidden -> ... -> out_dim`` (same shape rule
    as MetaMMF) and the ``K`` outputs are averaged with equal weights (decision: the paper gives
    no combination rule; a mean keeps the scale of one tower and adds no parameter).
    """

    def __init__(
        self,
        modality_dims: Sequence[int],
        out_dim: int = 32,
        num_layers: int = 1,
        first_hidden: int = 256,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if not modality_dims or any(d <= 0 for d in modality_dims):
            raise ValueError(f"modality_dims must be positive sizes, got {modality_dims}")
        self.modality_dims = [int(d) for d in modality_dims]
        self.in_dim, self.out_dim = sum(self.modality_dims), out_dim
        self.towers = nn.ModuleList(
            _static_tower(d, out_dim, num_layers, first_hidden, negative_slope)
            for d in self.modality_dims
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, sum(modality_dims)] -> [B, out_dim]``."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected {self.in_dim} features, got {x.shape[-1]}")
        parts = torch.split(x, self.modality_dims, dim=-1)
        return torch.stack([tower(p) for tower, p in zip(self.towers, parts, strict=True)]).mean(0)


class HybridFusion(nn.Module):
    """Static hybrid fusion, Table 3: the mean of :class:`EarlyFusion` and :class:`LateFusion`.

    Decision: the two branches have separate weights and are averaged with equal weights (the
    paper does not say how its hybrid combines them).
    """

    def __init__(
        self,
        modality_dims: Sequence[int],
        out_dim: int = 32,
        num_layers: int = 1,
        first_hidden: int = 256,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.early = EarlyFusion(
            sum(modality_dims), out_dim, num_layers, first_hidden, negative_slope
        )
        self.late = LateFusion(modality_dims, out_dim, num_layers, first_hidden, negative_slope)
        self.in_dim, self.out_dim = self.early.in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, sum(modality_dims)] -> [B, out_dim]``."""
        return 0.5 * (self.early(x) + self.late(x))


def build_fusion(
    kind: str,
    modality_dims: Sequence[int],
    out_dim: int = 32,
    num_layers: int = 1,
    first_hidden: int = 256,
    **kwargs: object,
) -> nn.Module:
    """Build a fusion module by kind: ``"metammf"``, ``"early"``, ``"late"`` or ``"hybrid"``.

    ``kwargs`` go to the class (``meta_dim``, ``meta_hidden``, ``rank``, ``mode``,
    ``static_weight`` for MetaMMF); an argument a class does not take raises ``TypeError``.
    """
    in_dim = sum(modality_dims)
    if kind == "metammf":
        return MetaMMFFusion(in_dim, out_dim, num_layers, first_hidden, **kwargs)
    if kind == "early":
        return EarlyFusion(in_dim, out_dim, num_layers, first_hidden, **kwargs)
    if kind == "late":
        return LateFusion(modality_dims, out_dim, num_layers, first_hidden, **kwargs)
    if kind == "hybrid":
        return HybridFusion(modality_dims, out_dim, num_layers, first_hidden, **kwargs)
    raise ValueError(f"unknown fusion kind {kind!r}; valid: {', '.join(FUSION_KINDS)}")
