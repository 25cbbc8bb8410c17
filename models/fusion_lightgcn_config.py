"""The hyperparameters of :class:`models.fusion_lightgcn.FusionLightGCN`, typed.

Each field is explained in :mod:`models.fusion_lightgcn`; the defaults are the ones chosen by
validation tuning. ``early_/late_/hybrid_lightgcn`` take a static fusion, ``metammf_lightgcn``
MetaMMF's (:mod:`models.fusion`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.base import ModelConfig
from models.conditioning import CONDITIONING_MODES
from models.fusion import MetaFusionConfig, StaticFusionConfig
from models.fusion_lightgcn_graph import GRAPH_SOURCES

COMBINES = ("beside", "propagate")


class FusionLightGCNConfig(ModelConfig, StaticFusionConfig):
    embed_dim: int = Field(64, ge=2)
    content_dim: int | None = Field(None, ge=1)
    num_layers: int = Field(2, ge=0)
    combine: Literal[COMBINES] = "beside"
    conditioning: Literal[CONDITIONING_MODES] = "center_l2"
    warm_content: float = 1.0
    knn_weight: float = Field(0.0, ge=0.0)
    new_item_weight: float = 0.5
    new_item_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    new_item_fused_weight: float = Field(1.0, ge=0.0)
    user_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    item_graph_k: int = Field(0, ge=0)
    item_graph_weights: list[float] | None = None
    item_graph_layers: int = Field(1, ge=1)
    item_graph_source: Literal[GRAPH_SOURCES] = "features"
    item_graph_warm: bool = True
    edge_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    history_decay: float = Field(1.0, gt=0.0, le=1.0)


class MetaMMFLightGCNConfig(FusionLightGCNConfig, MetaFusionConfig):
    """``metammf_lightgcn``: the same backbone under MetaMMF's dynamic fusion."""
