"""LATTICE (Zhang et al., "Mining Latent Structures for Multimedia Recommendation", MM'21), as a
baseline, after the authors' code in MMRec (``cf_model: lightgcn``).

Item-item structure learning. Per modality an *original* graph from the raw features (each
item's ``knn_k`` most cosine-similar items, edges weighted by the similarity, normalised
``D^-1/2 A D^-1/2`` with ``D`` the row sums) is kept fixed, and a *learned* graph is built the
same way from trainable projections of the (trainable) features. The modalities are mixed by
softmax weights learned from ``[0.5, 0.5]``: ``S = (1 - lambda) norm(sum_m w_m A_m^learned) +
lambda sum_m w_m S_m^original`` (``lambda_coeff`` 0.9). As in the authors' code the learned
graph is rebuilt with gradients on the first batch of every epoch and detached for the rest of
it (the projections and modality weights learn once an epoch), and rebuilt for evaluation.

Items are ``LightGCN_i + normalize((S^L e)_i)`` (``item_layers`` L = 1); the user-item
propagation is the authors' ``D^-1 (A + I)`` on the joint user+item graph (row-normalised, with
self loops, not LightGCN's symmetric form), ``num_layers`` = 2, the mean of layers 0..2. The
loss is BPR plus ``reg_weight`` times half the squared norm of the batch's final vectors per
batch row. The graph spans every item, so LATTICE is transductive (no new-item path).

The learned kNN is searched without gradients (an exact top-k in row chunks) and only the
chosen similarities are recomputed with gradients, which gives the gradient of the authors'
dense form (their top-k passes gradients to the chosen entries only) at O(I k) memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from models.base import BipartiteGraph, ModelConfig, Recommender, TrainingBatch, item_mask
from models.graph import SparseOperator
from models.item_graph import modality_blocks, top_k_neighbours
from models.losses import bpr_loss
from models.metammf import _check_features, _xavier_parameter, drop_item_edges


def _normalised(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
                size: int) -> torch.Tensor:
    """Values of ``D^-1/2 A D^-1/2`` for the entries of ``A`` (``D``: row sums of ``A``)."""
    row_sum = torch.zeros(size, dtype=values.dtype, device=values.device).index_add(
        0, rows, values)
    inverse = row_sum.clamp(min=1e-12).rsqrt()
    return values * inverse[rows] * inverse[cols]


def _weighted_knn(keys: torch.Tensor, k: int, with_grad: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, cols, similarity)`` of every item's ``k`` most similar items by cosine."""
    cols, _ = top_k_neighbours(keys.detach(), k)
    rows = torch.arange(keys.shape[0], device=cols.device).repeat_interleave(cols.shape[1])
    cols = cols.reshape(-1)
    unit = F.normalize(keys if with_grad else keys.detach(), dim=1)
    return rows, cols, (unit[rows] * unit[cols]).sum(1)


def _spmm(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
          x: torch.Tensor) -> torch.Tensor:
    """``A x`` for the entries (rows, cols, values), differentiable in ``values`` and ``x``."""
    return torch.zeros_like(x).index_add(0, rows, values.unsqueeze(1) * x[cols])


class LATTICEConfig(ModelConfig):
    """MMRec's settings (src/configs/model/LATTICE.yaml)."""

    embed_dim: int = Field(64, ge=1)
    feat_embed_dim: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=0)
    item_layers: int = Field(1, ge=1)
    knn_k: int = Field(10, ge=1)
    lambda_coeff: float = Field(0.9, ge=0.0, le=1.0)
    reg_weight: float = Field(1e-4, ge=0.0)


class LATTICE(Recommender):
    """Learned item-item graphs beside LightGCN-style propagation (see the module docstring)."""

    uses_features = True
    item_tables = ("item_embedding",)

    def __init__(
        self,
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int],
        *,
        embed_dim: int = 64,
        feat_embed_dim: int = 64,
        num_layers: int = 2,
        item_layers: int = 1,
        knn_k: int = 10,
        lambda_coeff: float = 0.9,
        reg_weight: float = 1e-4,
        cold_items: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        features = _check_features(item_features, modality_dims, graph.num_items)
        dims = list(modality_dims) or [int(features.shape[1])]
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.num_layers, self.item_layers, self.knn_k = num_layers, item_layers, knn_k
        self.lambda_coeff, self.reg_weight = float(lambda_coeff), float(reg_weight)
        graph = drop_item_edges(graph, item_mask(graph.num_items, cold_items))
        self.user_embedding = _xavier_parameter(graph.num_users, embed_dim)
        self.item_embedding = _xavier_parameter(graph.num_items, embed_dim)
        blocks = modality_blocks(features.float(), dims)
        self.features = nn.ParameterList(nn.Parameter(block.clone()) for block in blocks)
        self.projections = nn.ModuleList(nn.Linear(d, feat_embed_dim) for d in dims)
        self.modal_weight = nn.Parameter(torch.full((len(dims),), 0.5))
        # the original graphs: weighted kNN of the raw features, each normalised
        for m, block in enumerate(blocks):
            rows, cols, sim = _weighted_knn(block, knn_k, with_grad=False)
            self.register_buffer(f"original_{m}", torch.stack(
                [rows.float(), cols.float(), _normalised(rows, cols, sim, graph.num_items)]),
                persistent=False)
        self.ui = self._ui_operator(graph)
        self.register_buffer("train_edges", graph.edge_index.long().cpu(), persistent=False)
        self._fresh_epoch = True
        self._frozen_graph: SparseOperator | None = None

    def _ui_operator(self, graph: BipartiteGraph) -> SparseOperator:
        """The authors' ``D^-1 (A + I)`` on the joint graph (users first, then items)."""
        users = graph.edge_index[0].long().cpu()
        items = graph.edge_index[1].long().cpu() + graph.num_users
        nodes = graph.num_users + graph.num_items
        loops = torch.arange(nodes)
        rows = torch.cat([users, items, loops])
        cols = torch.cat([items, users, loops])
        degree = torch.bincount(rows, minlength=nodes).float()
        return SparseOperator(rows, cols, 1.0 / degree[rows], (nodes, nodes))

    def begin_epoch(self) -> None:
        self._fresh_epoch = True

    def _item_graph_entries(self, with_grad: bool
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, cols, values)`` of ``S`` from the current projections and weights."""
        weight = torch.softmax(self.modal_weight, dim=0)
        if not with_grad:
            weight = weight.detach()
        learned_rows, learned_cols, learned_values = [], [], []
        entries = []
        for m, (projection, features) in enumerate(zip(self.projections, self.features,
                                                       strict=True)):
            rows, cols, sim = _weighted_knn(projection(features), self.knn_k, with_grad)
            learned_rows.append(rows)
            learned_cols.append(cols)
            learned_values.append(weight[m] * sim)
            original = getattr(self, f"original_{m}")
            entries.append((original[0].long(), original[1].long(),
                            self.lambda_coeff * weight[m] * original[2]))
        rows, cols = torch.cat(learned_rows), torch.cat(learned_cols)
        values = _normalised(rows, cols, torch.cat(learned_values), self.num_items)
        entries.append((rows, cols, (1.0 - self.lambda_coeff) * values))
        return (torch.cat([e[0] for e in entries]), torch.cat([e[1] for e in entries]),
                torch.cat([e[2] for e in entries]))

    def _item_graph_part(self) -> torch.Tensor:
        """``S^L e`` of every item: with gradients through ``S`` on an epoch's first batch,
        through a frozen copy for the rest of the epoch; rebuilt for evaluation."""
        if self.training and self._fresh_epoch:
            self._fresh_epoch = False
            rows, cols, values = self._item_graph_entries(with_grad=True)
            self._frozen_graph = SparseOperator(rows, cols, values.detach(),
                                                (self.num_items, self.num_items)).to(
                                                    values.device)
            h = self.item_embedding
            for _ in range(self.item_layers):
                h = _spmm(rows, cols, values, h)
            return h
        if not self.training or self._frozen_graph is None:
            with torch.no_grad():
                rows, cols, values = self._item_graph_entries(with_grad=False)
            graph = SparseOperator(rows, cols, values, (self.num_items, self.num_items))
            graph = graph.to(self.item_embedding.device)
            if self.training:
                self._frozen_graph = graph
        else:
            graph = self._frozen_graph
        h = self.item_embedding
        for _ in range(self.item_layers):
            h = graph(h)
        return h

    def _ui_layers(self) -> list[torch.Tensor]:
        x = torch.cat([self.user_embedding, self.item_embedding])
        layers = [x]
        for _ in range(self.num_layers):
            x = self.ui(x)
            layers.append(x)
        return layers

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.stack(self._ui_layers()).mean(0)
        users, items = mean[: self.num_users], mean[self.num_users :]
        return users, items + F.normalize(self._item_graph_part(), dim=1)

    def model_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        users, items = self()
        user, positive, negative = (users[batch.users], items[batch.positives],
                                    items[batch.negatives])
        losses = {"bpr": bpr_loss(user, positive, negative)}
        if self.reg_weight > 0.0:
            squares = user.pow(2).sum() + positive.pow(2).sum() + negative.pow(2).sum()
            losses["embedding_reg"] = self.reg_weight * 0.5 * squares / len(batch.users)
        return losses

    @torch.no_grad()
    def user_embeddings_after(self, pairs: torch.Tensor) -> torch.Tensor:
        """Users once ``pairs`` join their histories: the row-normalised propagation with a
        self loop, ``u^(k+1) = (u^(k) + sum_{i in H(u)} i^(k)) / (|H(u)| + 1)``, over the whole
        history, with the items' layers of the trained graph."""
        self.eval()
        users = self()[0].clone()
        pairs = pairs.long().to(users.device)
        changed = torch.unique(pairs[:, 0])
        if changed.numel() == 0:
            return users
        layers = self._ui_layers()
        union = torch.cat([self.train_edges.to(users.device), pairs.T], dim=1)
        union = union[:, torch.isin(union[0], changed)]
        row = torch.searchsorted(changed, union[0])
        degree = torch.bincount(row, minlength=changed.numel()).float().unsqueeze(1)
        user = self.user_embedding[changed]
        total = user
        for layer in layers[:-1]:
            items = layer[self.num_users :]
            user = (user + torch.zeros_like(user).index_add_(0, row, items[union[1]])) / (
                degree + 1.0)
            total = total + user
        users[changed] = total / (self.num_layers + 1)
        return users
