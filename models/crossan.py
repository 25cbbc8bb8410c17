"""CROSSAN (cross-modal side adapters, MOMEF, a sequential user) and its controls, as one
:class:`models.base.Recommender` whose item side is chosen by ``item_encoder``:

- ``adapters``: :class:`models.side_adapters.SideAdapterTowers` over the frozen per-layer states
  of each expert (``crossan``: eq. 5 cross mixing; ``indsan``: independent towers);
- ``frozen``: the frozen last kept state of every expert, concatenated and linearly mapped
  (``sasrec_text``: no adapters);
- ``ids``: an item-ID table (``sasrec``: no content at all).

``id_residual`` (``crossan_id``, a departure from the paper, which has no ID expert): a content
item side plus a per-item ID vector, ``v_i = content_i + e_i``, with ``e`` initialised at zero. An
item never seen in training never enters eq. 7-8's softmax, so its ``e_i`` stays zero and its
vector is its content alone: exactly what the item tower gives a new item from raw text, so the
served towers need no change. The ID enters as a residual and not as a third expert of eq. 6's gate
because a gate would have to score an expert that is missing for every new item. Trained alone, the
ID part takes half of a trained item's vector and untrained items (content only) fall out of every
list; ``id_dropout`` (the MetaMMF models' new-item dropout, for IDs) drops the ID part of that
share of the batch's items in each training step, so the content vector alone must also rank.

Item features are ``[I, M * K * D]``: for each of M experts (``modality_dims``, one per expert,
each ``K * D``), the pooled frozen states of K kept layers of width D (``state_dim``).

The user is :class:`models.sequence.SequenceEncoder` over the newest ``max_length`` training items,
in the order of the training graph's edges (the trainer lists them oldest first). The loss is eq.
7-8, with the trainer's BPR triples choosing the targets: a triple ``(u, i+, -)`` is the position
of ``i+`` in u's training sequence, the ``max_length`` items before it are the history, and the
softmax runs over the batch's items (every history item and target) with logit ``y - log p`` (p:
training popularity), every other training item of u excluded. An epoch of triples is every
training interaction once, so eq. 8's sum over users and positions is covered once an epoch (the
first item of a sequence has no history and is never a target). The mean over the batch's targets
replaces the paper's sum (a scale). Scores for ranking and serving are the plain inner products (no
popularity term).

CKD (:mod:`models.ckd`) sees each expert as a modality: its view replaces every other expert's
states by their mean over items, for the history items and the scored items alike. The user that
scores a pair is its *scoring context* (:meth:`SequentialRecommender.score_contexts`): for a
training pair the history just before that item (the user eq. 8 trains at that position, so a
margin never reads a history that holds its own positive), for any other pair the user after all
its training items (the user that ranks). A uni-modal teacher keeps one vector per context, ``P +
U`` of them (P training interactions), so distilling from it reads stored vectors, never a second
model.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from models.base import (
    BipartiteGraph,
    ModelConfig,
    Recommender,
    ServingTowers,
    TrainingBatch,
    pair_margins,
)
from models.crossan_towers import SequentialItemTower, SequentialUserTower
from models.sequence import SequenceEncoder
from models.side_adapters import FUSIONS, SideAdapterTowers

ITEM_ENCODERS = ("adapters", "frozen", "ids")
PAD = -1


def _flat_sequences(graph: BipartiteGraph) -> dict[str, torch.Tensor]:
    """The training edges as per-user sequences: ``items`` (by user, in edge order), each
    user's ``start`` into them and ``count``, and the sorted ``user * I + item`` ``keys`` with
    each key's ``position`` in ``items``."""
    users, items = graph.edge_index[0].long().cpu(), graph.edge_index[1].long().cpu()
    order = torch.sort(users, stable=True).indices  # by user, edge order kept within a user
    counts = torch.bincount(users, minlength=graph.num_users)
    keys, position = torch.sort(users[order] * graph.num_items + items[order])
    return {"items": items[order], "start": torch.cumsum(counts, 0) - counts, "count": counts,
            "keys": keys, "position": position}


def _window(
    items: torch.Tensor, ends: torch.Tensor, starts: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``length`` sequence positions before each of ``ends`` (exclusive), left-padded:
    ``(item ids with PAD [B, length], real [B, length])``; a position before its user's start
    is padding."""
    index = ends.unsqueeze(1) - torch.arange(length, 0, -1, device=ends.device)
    real = index >= starts.unsqueeze(1)
    return torch.where(real, items[index.clamp_min(0)], torch.full_like(index, PAD)), real


def ordered_histories(graph: BipartiteGraph, length: int) -> torch.Tensor:
    """long [U, length]: each user's newest ``length`` items in edge order, left-padded."""
    flat = _flat_sequences(graph)
    return _window(flat["items"], flat["start"] + flat["count"], flat["start"], length)[0]


class SASRecConfig(ModelConfig):
    """The sequence encoder (section 5: d = 64, 2 blocks, 2 heads, dropout 0.1)."""

    embed_dim: int = Field(64, ge=1)
    max_length: int = Field(10, ge=1)
    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class SASRecTextConfig(SASRecConfig):
    state_dim: int = Field(384, ge=1)  # the frozen encoder's width


class CROSSANConfig(SASRecTextConfig):
    """The side adapters (eq. 5) and the expert fusion (eq. 6); our defaults."""

    adapter_dim: int = Field(64, ge=1)
    fusion: Literal[FUSIONS] = "momef"
    top_k: int = Field(2, ge=1)
    id_residual: bool = False
    id_dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CROSSANIDConfig(CROSSANConfig):
    id_residual: bool = True  # our variant: a zero-initialised item-ID residual


class SequentialRecommender(Recommender):
    uses_features = True
    sequential_user = True
    user_tables: tuple[str, ...] = ()

    def __init__(
        self,
        graph: BipartiteGraph, item_features: torch.Tensor | None = None,
        modality_dims: Sequence[int] = (), *,
        item_encoder: str = "adapters",
        embed_dim: int = 64,
        max_length: int = 10,
        num_blocks: int = 2,
        num_heads: int = 2,
        dropout: float = 0.1,
        state_dim: int = 384,
        adapter_dim: int = 64,
        mixing: str = "cross",
        fusion: str = "momef",
        top_k: int = 2,
        id_residual: bool = False,
        id_dropout: float = 0.0,
        item_chunk: int = 4096,
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if item_encoder not in ITEM_ENCODERS:
            raise ValueError(f"item_encoder must be one of {ITEM_ENCODERS}, got {item_encoder!r}")
        self.item_encoder, self.item_chunk = item_encoder, item_chunk
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.uses_features = item_encoder != "ids"
        self.item_tables = ("item_embedding",) if item_encoder == "ids" else ()
        if self.uses_features:
            if item_features is None:
                raise ValueError(f"item_encoder={item_encoder!r} needs item features")
            dims = list(modality_dims) or [int(item_features.shape[1])]
            if any(d != dims[0] or d % state_dim for d in dims):
                raise ValueError(f"every expert needs K * {state_dim} features, got {dims}")
            self.num_experts, self.num_layers = len(dims), dims[0] // state_dim
            self.state_dim = state_dim
            # flat, one block per expert: each expert is a modality view for CKD
            self.register_buffer("features", item_features.float().reshape(
                -1, sum(dims)), persistent=False)
            self.view_buffer, self.modality_dims = "features", dims
        if item_encoder == "adapters":
            self.towers = SideAdapterTowers(self.num_experts, self.num_layers, state_dim,
                                            embed_dim, adapter_dim=adapter_dim, mixing=mixing,
                                            fusion=fusion, top_k=min(top_k, self.num_experts))
        elif item_encoder == "frozen":
            self.project = nn.Linear(self.num_experts * state_dim, embed_dim)
        else:
            self.item_embedding = nn.Parameter(nn.init.normal_(
                torch.empty(graph.num_items, embed_dim), std=0.02))
        if id_residual and item_encoder == "ids":
            raise ValueError("id_residual adds IDs to a content item side; 'ids' has no content")
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"id_dropout must lie in [0, 1), got {id_dropout}")
        self.id_residual, self.id_dropout = id_residual, id_dropout
        if id_residual:
            self.item_residual = nn.Parameter(torch.zeros(graph.num_items, embed_dim))
        self.encoder = SequenceEncoder(embed_dim, max_length, num_blocks, num_heads, dropout)
        self.max_length = max_length
        flat = _flat_sequences(graph)
        self.register_buffer("sequence_items", flat["items"], persistent=False)  # oldest first
        self.register_buffer("sequence_keys", flat["keys"], persistent=False)  # user*I + item
        self.register_buffer("key_position", flat["position"], persistent=False)
        self.register_buffer("sequence_users", torch.repeat_interleave(
            torch.arange(graph.num_users), flat["count"]), persistent=False)
        self.register_buffer("user_start", flat["start"], persistent=False)
        self.register_buffer("user_count", flat["count"], persistent=False)
        self.register_buffer("histories", _window(flat["items"], flat["start"] + flat["count"],
                                                  flat["start"], max_length)[0],
                             persistent=False)  # each user's newest max_length items
        counts = graph.item_degree().float().clamp_min(1.0)
        self.register_buffer("log_popularity", (counts / counts.sum()).log(), persistent=False)

    # ---- items ------------------------------------------------------------------------------
    @property
    def states(self) -> torch.Tensor:
        """The item features as frozen states [I, M, K, D] (a view of ``features``)."""
        return self.features.view(-1, self.num_experts, self.num_layers, self.state_dim)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """[len(items), d] item vectors of item ids ``items``."""
        if self.item_encoder == "ids":
            return self.item_embedding[items]
        vectors = self.content_vectors(self.states[items])
        if not self.id_residual:
            return vectors
        residual = self.item_residual[items]
        if self.training and self.id_dropout > 0:  # these items train as if new
            kept = torch.rand(len(items), 1, device=residual.device) >= self.id_dropout
            residual = residual * kept
        return vectors + residual

    def content_vectors(self, states: torch.Tensor) -> torch.Tensor:
        """Item vectors [B, d] from frozen states [B, M, K, D] (the content item sides)."""
        if self.item_encoder == "frozen":
            return self.project(states[:, :, -1].flatten(1))
        return self.towers(states)

    def all_items(self) -> torch.Tensor:
        rows = torch.arange(self.num_items, device=self.histories.device)
        return torch.cat([self.embed_items(part) for part in rows.split(self.item_chunk)])

    # ---- users ------------------------------------------------------------------------------
    def encode_histories(self, histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """User vectors [B, d] of left-padded item-id rows ``histories`` [B, L], given every
        item's vector ``items`` [I, d]."""
        mask = histories != PAD
        return self.encoder.last(items[histories.clamp_min(0)], mask)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.all_items()
        users = torch.cat([self.encode_histories(part, items)
                           for part in self.histories.split(self.item_chunk)])
        return users, items

    # ---- scoring contexts and modality views (CKD) -------------------------------------------
    def score_contexts(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per pair, the user as it scores the item: for a training pair its position p in
        ``sequence_items`` (the user just before that item, as eq. 8 scores it: never a
        history that holds the item itself); for any other pair ``P + user`` (the user
        after all its training items, as every item is ranked), P = training interactions."""
        position = self._position(users, items)
        return torch.where(position >= 0, position, len(self.sequence_items) + users)

    def _before(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`_window` of the ``max_length`` training items before each of ``positions``
        (indices into ``sequence_items``), within its user's sequence."""
        return _window(self.sequence_items, positions,
                       self.user_start[self.sequence_users[positions]], self.max_length)

    def _context_histories(self, contexts: torch.Tensor) -> torch.Tensor:
        """The left-padded item-id histories [N, max_length] of ``score_contexts`` rows."""
        count = len(self.sequence_items)
        before, _ = self._before(contexts.clamp_max(count - 1))
        after = self.histories[(contexts - count).clamp_min(0)]
        return torch.where((contexts < count).unsqueeze(1), before, after)

    def context_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.all_items()
        contexts = torch.arange(len(self.sequence_items) + self.num_users,
                                device=items.device)
        users = [self.encode_histories(self._context_histories(part), items)
                 for part in contexts.split(self.item_chunk)]
        return torch.cat(users), items

    def view_margins(
        self, keeps: Sequence[Collection[int]], users: torch.Tensor, first: torch.Tensor,
        second: torch.Tensor,
    ) -> list[torch.Tensor]:
        """Margins of each view on the triples' contexts (:meth:`score_contexts` of
        ``(users, first)``): only the items the histories and triples name are embedded, each
        view's vectors feed its own sequence encoder (the history is seen in the view too)."""
        histories = self._context_histories(self.score_contexts(users, first))
        size, count = histories.numel(), len(first)
        needed, local = torch.unique(torch.cat([histories.flatten().clamp_min(0), first,
                                                second]), return_inverse=True)
        local_histories = local[:size].view_as(histories)
        real = histories != PAD
        margins = []
        for keep in keeps:
            with self.modality_view(keep):
                vectors = self.embed_items(needed)
            user = self.encoder.last(vectors[local_histories], real)
            margins.append(pair_margins(user, vectors[local[size : size + count]],
                                        vectors[local[size + count :]]))
        return margins

    @torch.no_grad()
    def user_embeddings_after(self, pairs: torch.Tensor) -> torch.Tensor:
        histories = self.histories.clone()
        users, items = pairs[:, 0].long().to(histories.device), pairs[:, 1].long().to(
            histories.device)
        order = torch.sort(users, stable=True).indices
        users, items = users[order], items[order]
        starts = torch.searchsorted(users, users, right=False)
        rank = torch.arange(len(users), device=users.device) - starts  # k-th event of its user
        for k in range(int(rank.max()) + 1 if len(rank) else 0):
            chosen = rank == k
            rows = users[chosen]
            histories[rows] = torch.cat([histories[rows, 1:], items[chosen, None]], 1)
        vectors = self.all_items()
        return torch.cat([self.encode_histories(part, vectors)
                          for part in histories.split(self.item_chunk)])

    # ---- eq. 7-8 ----------------------------------------------------------------------------
    def _position(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Index into ``sequence_items`` of each training pair (user, item); -1 if none."""
        keys = users * self.num_items + items
        slots = torch.searchsorted(self.sequence_keys, keys).clamp_max(len(self.sequence_keys) - 1)
        found = self.sequence_keys[slots] == keys
        return torch.where(found, self.key_position[slots], torch.full_like(slots, -1))

    def _own_items(self, users: torch.Tensor, batch_items: torch.Tensor) -> torch.Tensor:
        """bool [B, N]: is batch item n a training item of row b's user (gathered per user's
        own items, never over all B x N pairs)."""
        counts = self.user_count[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        positions = (torch.repeat_interleave(self.user_start[users], counts)
                     + torch.arange(len(rows), device=users.device) - first)
        items = self.sequence_items[positions]
        slots = torch.searchsorted(batch_items, items).clamp_max(len(batch_items) - 1)
        found = batch_items[slots] == items
        own = torch.zeros(len(users), len(batch_items), dtype=torch.bool, device=users.device)
        own[rows[found], slots[found]] = True
        return own

    def model_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        flat = self._position(batch.users, batch.positives)
        flat = flat[flat >= 0]
        histories, real = self._before(flat)  # the max_length positions before the target
        has_history = real[:, -1]
        flat, histories, real = flat[has_history], histories[has_history], real[has_history]
        if len(flat) == 0:  # only first items: nothing to predict (a zero that backpropagates)
            return {"softmax": sum(p.sum() for p in self.parameters()) * 0.0}
        targets = self.sequence_items[flat]
        users = self.sequence_users[flat]
        batch_items, local = torch.unique(torch.cat([histories.flatten(), targets]),
                                          return_inverse=True)
        local_histories, local_targets = local[: histories.numel()].view_as(histories), local[
            histories.numel():]
        vectors = self.embed_items(batch_items.clamp_min(0))  # [N, d]
        hidden = self.encoder.last(vectors[local_histories], real)  # [B, d]
        logits = hidden @ vectors.T - self.log_popularity[batch_items.clamp_min(0)]  # [B, N]
        own = self._own_items(users, batch_items)
        own |= (batch_items == PAD).unsqueeze(0)  # the padding is no item
        own[torch.arange(len(users), device=own.device), local_targets] = False
        loss = F.cross_entropy(logits.masked_fill(own, float("-inf")), local_targets)
        return {"softmax": loss}

    def serving_towers(self) -> ServingTowers | None:
        """Item tower: the item side on raw features (here the per-layer states); its vector
        is also the item's history state. User tower: the sequence encoder over those vectors,
        at most ``max_length`` of them (the bundle says so and the service clamps). An ID-only
        model (``sasrec``) has no feature path, so no towers."""
        if not self.uses_features:
            return None
        self.eval()
        with torch.no_grad():
            items = self.all_items()
        return ServingTowers(
            item_tower=SequentialItemTower(self),
            user_tower=SequentialUserTower(self.encoder),
            item_states=items,
            user_states=torch.zeros(self.num_users, 1),  # no per-user state: the history is all
            feature_dim=int(self.states[0].numel()),
            max_history=self.max_length,
        )

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        return SequentialItemTower(self)(features)[0]

    def diagnostics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"item_encoder": self.item_encoder}
        if self.id_residual:  # how much of a trained item's vector its ID carries
            with torch.no_grad():
                content = self.content_vectors(self.states).norm(dim=1)
                residual = self.item_residual.norm(dim=1)
                trained = residual > 0
                out["id_residual_share"] = float(
                    (residual[trained] / (residual[trained] + content[trained])).mean()
                ) if trained.any() else 0.0
        if self.item_encoder == "adapters":
            mixing = self.towers.mixing
            out["mixing_weights"] = [mixing.weights(i).tolist()
                                     for i in range(1, self.num_layers)]
            if self.towers.fusion.mode == "static":
                out["fusion_weights"] = torch.softmax(
                    self.towers.fusion.static_logits, 0).tolist()
        return out
