"""CROSSAN's item side: one side-adapter tower per expert over a frozen encoder's states, eq. 5
cross-expert mixing between the towers, and eq. 6 MOMEF fusion of the towers' outputs.

Input: the frozen states of every expert at the kept layers, ``[B, M, K, D]`` (M experts, K kept
layers, e.g. MiniLM's hidden states 0, 2, 4, 6: LayerDrop of every other layer). The towers run
on *pooled* states, as IISAN's cached-states variant does, so training never runs the frozen
encoder.

Eq. 5, for expert m at kept layer i >= 1::

    h_i^m = Adapter_i^m( sum_{m'} a_i^{m,m'} h_{i-1}^{m'} + a_i^{m,self} s_i^m ),
    sum_{m'} a_i^{m,m'} + a_i^{m,self} = 1

Decisions (the paper leaves them open):

- **sum to 1 by a softmax** over the M + 1 learned logits of (m, i), initialised to zero (equal
  weights). IISAN mixes with a sigmoid gate between the previous adapter output and the frozen
  state; with one expert both are the same two-way convex combination.
- **first kept layer**: its input is the frozen state alone (IISAN's "previous" is zeros; the
  mixing would only scale the state, which the adapter's layer norm undoes).
- **adapter**: Houlsby's bottleneck (LayerNorm, down to ``adapter_dim``, GELU, up, residual),
  the up-projection initialised at zero so every tower starts as the identity of its input
  (the down-projection gets its first gradient once the first step has moved the up one).
- **mixing "independent"** (INDSAN, Table 6): each expert mixes only its own previous output
  and its own state (M = 1 in the equation); no cross terms exist as parameters.
- **gate input** (MOMEF): the concatenation of the experts' outputs; a linear layer scores
  them, the top-k are kept and renormalised by a softmax over the kept scores. With k = 1 the
  one kept weight is 1 whatever the scores, so the gate gets no gradient and routes by its
  initialisation (eq. 6 as written; Switch-style MoEs multiply by the full softmax's
  probability instead): k >= 2 is the useful range, and with two experts k = 2 is dynamic
  gating. The registry's default is k = 2.

Fusion modes (Table 5): ``momef`` (eq. 6, top-k), ``dynamic`` (every expert, per-item softmax
gate: ``momef`` with k = M), ``static`` (one learned softmax weight per expert, the same for all
items), ``concat`` (concatenation, then a linear map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MIXINGS = ("cross", "independent")
FUSIONS = ("momef", "dynamic", "static", "concat")


class Adapter(nn.Module):
    """Houlsby bottleneck adapter: ``x + up(gelu(down(norm(x))))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(self.norm(x))))


class CrossModalMixing(nn.Module):
    """The weights of eq. 5 for every expert and kept layer i >= 1."""

    def __init__(self, num_experts: int, num_layers: int, mode: str = "cross") -> None:
        super().__init__()
        if mode not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mode!r}")
        self.mode, self.num_experts = mode, num_experts
        sources = num_experts + 1 if mode == "cross" else 2  # previous outputs + own state
        self.logits = nn.Parameter(torch.zeros(max(num_layers - 1, 0), num_experts, sources))

    def weights(self, layer: int) -> torch.Tensor:
        """[M, sources] for kept layer ``layer`` >= 1; each row sums to 1 (last column: own
        state; ``cross``: columns 0..M-1 are the experts' previous outputs)."""
        return torch.softmax(self.logits[layer - 1], dim=-1)

    def forward(self, layer: int, previous: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``previous`` [B, M, D] (adapter outputs at layer-1), ``states`` [B, M, D] (frozen
        states at ``layer``) -> every expert's adapter input [B, M, D]."""
        w = self.weights(layer)
        if self.mode == "cross":
            mixed = torch.einsum("ms,bsd->bmd", w[:, :-1], previous)
        else:
            mixed = w[:, 0, None] * previous
        return mixed + w[:, -1, None] * states


class ExpertFusion(nn.Module):
    """Eq. 6 and the Table 5 controls: expert outputs [B, M, d] -> item vector [B, d]."""

    def __init__(self, num_experts: int, dim: int, mode: str = "momef", top_k: int = 1) -> None:
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {mode!r}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..{num_experts}, got {top_k}")
        self.mode, self.num_experts = mode, num_experts
        self.top_k = num_experts if mode == "dynamic" else top_k
        if mode in ("momef", "dynamic"):
            self.gate = nn.Linear(num_experts * dim, num_experts)
        elif mode == "static":
            self.static_logits = nn.Parameter(torch.zeros(num_experts))
        else:
            self.project = nn.Linear(num_experts * dim, dim)

    def weights(self, outputs: torch.Tensor) -> torch.Tensor:
        """[B, M] expert weights (zeros outside the top-k, each row sums to 1)."""
        if self.mode == "static":
            return torch.softmax(self.static_logits, 0).expand(outputs.shape[0], -1)
        if self.mode == "concat":
            raise ValueError("concatenation has no expert weights")
        scores = self.gate(outputs.flatten(1))
        kept, index = scores.topk(self.top_k, dim=-1)
        return torch.zeros_like(scores).scatter(-1, index, torch.softmax(kept, dim=-1))

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.mode == "concat":
            return self.project(outputs.flatten(1))
        return (self.weights(outputs).unsqueeze(-1) * outputs).sum(1)


class SideAdapterTowers(nn.Module):
    """Frozen states [B, M, K, D] -> item vectors [B, out_dim] (module docstring)."""

    def __init__(
        self, num_experts: int, num_layers: int, state_dim: int, out_dim: int, *,
        adapter_dim: int = 64, mixing: str = "cross", fusion: str = "momef", top_k: int = 1,
    ) -> None:
        super().__init__()
        self.num_experts, self.num_layers, self.state_dim = num_experts, num_layers, state_dim
        self.adapters = nn.ModuleList(
            nn.ModuleList(Adapter(state_dim, adapter_dim) for _ in range(num_experts))
            for _ in range(num_layers)
        )
        self.mixing = CrossModalMixing(num_experts, num_layers, mixing)
        self.outputs = nn.ModuleList(nn.Linear(state_dim, out_dim) for _ in range(num_experts))
        self.fusion = ExpertFusion(num_experts, out_dim, fusion, top_k)

    def expert_outputs(self, states: torch.Tensor) -> torch.Tensor:
        """[B, M, out_dim]: every tower's output ``f_m(i)`` before fusion."""
        if states.shape[1:] != (self.num_experts, self.num_layers, self.state_dim):
            raise ValueError(f"states of shape {tuple(states.shape)}; expected [B, "
                             f"{self.num_experts}, {self.num_layers}, {self.state_dim}]")
        hidden = torch.stack([self.adapters[0][m](states[:, m, 0])
                              for m in range(self.num_experts)], 1)
        for layer in range(1, self.num_layers):
            inputs = self.mixing(layer, hidden, states[:, :, layer])
            hidden = torch.stack([self.adapters[layer][m](inputs[:, m])
                                  for m in range(self.num_experts)], 1)
        return torch.stack([self.outputs[m](hidden[:, m]) for m in range(self.num_experts)], 1)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.expert_outputs(states))
