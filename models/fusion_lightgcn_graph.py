"""The item-item content graph inside the LightGCN-backbone fusion models (issue 20), a mixin
of :class:`models.fusion_lightgcn.FusionLightGCN`.

``item_graph_k`` (> 0, ``beside`` only) adds FREEDOM's frozen item-item content graph
(:mod:`models.item_graph`) beside the user-item propagation: every item's ID half gains
``h_i = sum_m w_m mean_{j in N_m(i)} e_c_j``, the ID embeddings of its ``k`` nearest content
neighbours in each modality among the items with training interactions (``h = S e_c``, one
layer; ``item_graph_layers`` > 1 smooths ``S^(L-1) e_c`` once more). The user side is
LightGCN's, unchanged. A new item has no ID of its own but does have neighbours: its ID half is
``unknown + h_new``, its neighbours found without itself, so it lands among warm items in the
collaborative space; the item tower finds them among the catalogue
(:meth:`models.item_graph.ContentNeighbourGraph.place`).
``item_graph_source``: ``features`` (the conditioned features of each modality, FREEDOM's
graph), or ``fused`` (one graph over MetaMMF's fused ``e_m``: the dynamic fusion chooses the
neighbours; rebuilt before every epoch from a frozen copy of the fusion, so the graph and a new
item's placement read the same weights). ``item_graph_warm=False`` keeps the graph for new
items only (their placement, and the items ``new_item_dropout`` scores as new): warm items keep
their own ID half. ``edge_dropout`` is FREEDOM's degree-sensitive pruning
of the user-item graph (that share of edges dropped each epoch, popular pairs first).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from models.item_graph import ContentNeighbourGraph, modality_blocks

GRAPH_SOURCES = ("features", "fused")


class FusionContentGraph:
    """Content-graph methods of :class:`models.fusion_lightgcn.FusionLightGCN`."""

    def _init_item_graph(self, k: int, weights: Sequence[float] | None, layers: int,
                         source: str, warm: torch.Tensor) -> None:
        if self.combine != "beside":
            raise ValueError("item_graph_k > 0 needs combine='beside'")
        if source not in GRAPH_SOURCES:
            raise ValueError(f"item_graph_source must be one of {GRAPH_SOURCES}, got {source!r}")
        if layers < 1:
            raise ValueError(f"item_graph_layers must be >= 1, got {layers}")
        self.item_graph_source, self.item_graph_layers = source, int(layers)
        if source == "fused":  # the graph reads a frozen copy, refreshed before every epoch
            self.graph_fusion = copy.deepcopy(self.fusion).requires_grad_(False)
        count = len(self.modality_dims) if source == "features" else 1
        self.item_graph = ContentNeighbourGraph(k, weights, count, torch.nonzero(warm)[:, 0])
        self.item_graph.build(self.graph_keys(self.conditioned))

    def graph_keys(self, conditioned: torch.Tensor) -> list[torch.Tensor]:
        """What the item graph compares, per modality (or the fused ``e_m`` alone)."""
        if self.item_graph_source == "features":
            return modality_blocks(conditioned, self.modality_dims)
        return [self.graph_fusion(conditioned)]

    def _graph_table(self) -> torch.Tensor:
        """What a neighbour contributes: ``S^(L-1) e_c`` (``e_c`` itself for one layer)."""
        table = self.item_id_embedding
        for _ in range(self.item_graph_layers - 1):
            table = self.item_graph.smooth(table)
        return table

    def _graph_parts(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(h [I, d_c], h as new [I, d_c])``: every item's content-neighbour part of its ID
        half, and the same part as a new item would find it (without itself); None without
        an item graph. Once per training step."""
        if self.item_graph is None:
            return None

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            table = self._graph_table()
            return self.item_graph.smooth(table), self.item_graph.smooth_as_new(table)

        return self.step_memo("item_graph", compute)

    def _as_new(self, rows: torch.Tensor) -> torch.Tensor | None:
        parts = self._graph_parts()
        return None if parts is None else parts[1][rows]

    def place_new_items(self, conditioned: torch.Tensor) -> torch.Tensor | None:
        """The content-neighbour part [B, d_c] of items known only by their conditioned
        features (None without an item graph): the graph's placement among the catalogue."""
        if self.item_graph is None:
            return None
        candidates = self.item_graph.candidates
        pool = [F.normalize(key, dim=1)
                for key in self.graph_keys(self.conditioned[candidates])]
        return self.item_graph.place(self.graph_keys(conditioned), pool,
                                     self._graph_table()[candidates])
