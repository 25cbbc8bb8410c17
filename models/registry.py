"""Model registry: one name per model, its default hyperparameters and one builder.

``build_model(name, graph, item_features, modality_dims, **hparams)`` merges ``hparams`` over
``default_hparams(name)``; a name outside :data:`MODEL_NAMES` raises ``ValueError``, a
hyperparameter a model does not take raises ``TypeError``.

Fused models (``metammf_*``, ``*_gcn`` fusion controls) get their fusion module from
:func:`models.fusion.build_fusion` with ``out_dim = embed_dim // 2`` (``d_m``); the fusion
hyperparameters are ``fusion_layers`` (N), ``first_hidden`` and, for MetaMMF, ``meta_dim``
(``d_s``), ``meta_hidden``, ``rank`` (R), ``fusion_mode`` (``"cp"`` or ``"full"``) and
``static_weight``. Defaults follow the paper's TikTok setting (section 5.2: N=1, d_s=5, R=16,
representation size 64, two GCN layers).

Every model takes ``cold_items`` (items held out of training, see :mod:`models.metammf`); the
ID-only models accept it and ignore it (they have no path for an item without interactions),
VBPR gives those items ``[0 ; E f_i]``.

``metammf_lightgcn`` and its static controls ``early_/late_/hybrid_lightgcn`` are MetaMMF's
fusion on a LightGCN backbone (:mod:`models.fusion_lightgcn`, a variant the paper allows, not
eq. 18); their fusion is built on the conditioned features. ``mostpop`` and ``content_knn`` are
training-free baselines (:mod:`models.popularity`, :mod:`models.content_knn`); ``freedom`` and
``lattice`` the item-item graph baselines (:mod:`models.freedom`, :mod:`models.lattice`).

``crossan`` (eq. 5 cross-expert side adapters + eq. 6 MOMEF), ``crossan_id`` (the same plus a
zero-initialised item-ID residual, our variant), ``indsan`` (independent towers),
``sasrec_text`` (frozen states, no adapters) and ``sasrec`` (item IDs) share the sequential
user encoder and eq. 7-8's loss (:mod:`models.crossan`); their item features are per-layer
encoder states (``training.feature_sets``).

Every model's hyperparameters are typed by their defaults (:func:`hparams_schema`, a pydantic
model built from them): an unknown name or a value of the wrong type fails before anything is
built, naming the hyperparameter and what it got.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from models.base import BipartiteGraph, Recommender
from models.content_knn import ContentKNN
from models.crossan import SequentialRecommender
from models.freedom import FREEDOM
from models.fusion import build_fusion
from models.fusion_lightgcn import FusionLightGCN
from models.lattice import LATTICE
from models.lightgcn import LightGCN
from models.metammf import FusedItemRecommender, FusionGCN, FusionMF
from models.mf import BPRMF, VBPR
from models.popularity import MostPop

_NEW_ITEMS: dict[str, Any] = {"id_dropout": 0.0, "cold_items": None, "standardize": False}
_NEW_USERS: dict[str, Any] = {"user_dropout": 0.0, "readout": "last"}
_STATIC_FUSION: dict[str, Any] = {"fusion_layers": 1, "first_hidden": 256}
_META_FUSION: dict[str, Any] = {
    **_STATIC_FUSION,
    "meta_dim": 5,
    "meta_hidden": 64,
    "rank": 16,
    "fusion_mode": "cp",
    "static_weight": True,
}

# The LightGCN-backbone variant (models.fusion_lightgcn); defaults from validation tuning.
_LIGHTGCN_FUSED: dict[str, Any] = {
    "embed_dim": 64,
    "content_dim": None,
    "num_layers": 2,
    "combine": "beside",
    "conditioning": "center_l2",
    "warm_content": 1.0,
    "knn_weight": 0.0,
    "new_item_weight": 0.5,
    "new_item_dropout": 0.1,
    "new_item_fused_weight": 1.0,
    "user_dropout": 0.0,
    "item_graph_k": 0,
    "item_graph_weights": None,
    "item_graph_layers": 1,
    "item_graph_source": "features",
    "item_graph_warm": True,
    "edge_dropout": 0.0,
    "history_decay": 1.0,
    "cold_items": None,
}

# CROSSAN and its controls (models.crossan): section 5's sequence encoder, our adapter defaults.
_SEQUENTIAL: dict[str, Any] = {"embed_dim": 64, "max_length": 10, "num_blocks": 2,
                               "num_heads": 2, "dropout": 0.1, "cold_items": None}
_SIDE_ADAPTERS: dict[str, Any] = {"state_dim": 384, "adapter_dim": 64, "fusion": "momef",
                                  "top_k": 2, "id_residual": False, "id_dropout": 0.0}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "metammf_gcn": {"embed_dim": 64, "num_layers": 2, **_META_FUSION, **_NEW_ITEMS, **_NEW_USERS},
    "metammf_mf": {"embed_dim": 64, **_META_FUSION, **_NEW_ITEMS},
    "lightgcn": {"embed_dim": 64, "num_layers": 2, "cold_items": None},
    "vbpr": {"embed_dim": 64, "feature_dim": None, "cold_items": None},
    "bpr": {"embed_dim": 64, "cold_items": None},
    "early_gcn": {"embed_dim": 64, "num_layers": 2, **_STATIC_FUSION, **_NEW_ITEMS, **_NEW_USERS},
    "late_gcn": {"embed_dim": 64, "num_layers": 2, **_STATIC_FUSION, **_NEW_ITEMS, **_NEW_USERS},
    "hybrid_gcn": {"embed_dim": 64, "num_layers": 2, **_STATIC_FUSION, **_NEW_ITEMS, **_NEW_USERS},
    "metammf_lightgcn": {**_LIGHTGCN_FUSED, **_META_FUSION},
    "early_lightgcn": {**_LIGHTGCN_FUSED, **_STATIC_FUSION},
    "late_lightgcn": {**_LIGHTGCN_FUSED, **_STATIC_FUSION},
    "hybrid_lightgcn": {**_LIGHTGCN_FUSED, **_STATIC_FUSION},
    # MMRec's settings (src/configs/model/*.yaml); reg_weight, edge_dropout (FREEDOM's
    # "dropout") and the learning rate are their searched hyperparameters
    "freedom": {"embed_dim": 64, "num_layers": 2, "mm_layers": 1,
                "knn_k": 10, "modality_weights": None, "reg_weight": 1e-4, "edge_dropout": 0.8,
                "cold_items": None},
    "lattice": {"embed_dim": 64, "feat_embed_dim": 64, "num_layers": 2, "item_layers": 1,
                "knn_k": 10, "lambda_coeff": 0.9, "reg_weight": 1e-4, "cold_items": None},
    "mostpop": {"cold_items": None},
    "content_knn": {"conditioning": "center_l2", "history_decay": 1.0, "cold_items": None},
    "crossan": {**_SEQUENTIAL, **_SIDE_ADAPTERS},
    "crossan_id": {**_SEQUENTIAL, **_SIDE_ADAPTERS, "id_residual": True},
    "indsan": {**_SEQUENTIAL, **_SIDE_ADAPTERS},
    "sasrec": {**_SEQUENTIAL},
    "sasrec_text": {**_SEQUENTIAL, "state_dim": 384},
}

#: Every buildable model name.
MODEL_NAMES: tuple[str, ...] = tuple(_DEFAULTS)

_FUSION_KEYS = {"fusion_layers", "first_hidden", "meta_dim", "meta_hidden", "rank"}


def _fusion_kwargs(hp: dict[str, Any]) -> dict[str, Any]:
    """Pop the fusion hyperparameters out of ``hp`` as ``build_fusion`` keywords."""
    kwargs = {k: hp.pop(k) for k in list(hp) if k in _FUSION_KEYS}
    if "fusion_mode" in hp:
        kwargs["mode"] = hp.pop("fusion_mode")
    if "static_weight" in hp:
        kwargs["static_weight"] = hp.pop("static_weight")
    kwargs["num_layers"] = kwargs.pop("fusion_layers")
    return kwargs


def default_hparams(name: str) -> dict[str, Any]:
    """A fresh copy of the default hyperparameters of model ``name``."""
    _check_name(name)
    return copy.deepcopy(_DEFAULTS[name])


def _check_name(name: str) -> None:
    if name not in _DEFAULTS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")


def _fused(model_cls: type[FusedItemRecommender], kind: str) -> Callable[..., Recommender]:
    def build(
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int],
        **hp: Any,
    ) -> Recommender:
        if item_features is None:
            raise ValueError(f"{kind} fusion needs item_features")
        dims = list(modality_dims) or [int(item_features.shape[1])]
        fusion = build_fusion(kind, dims, out_dim=hp["embed_dim"] // 2, **_fusion_kwargs(hp))
        return model_cls(graph, item_features, dims, fusion=fusion, **hp)

    return build


def _fused_lightgcn(kind: str) -> Callable[..., Recommender]:
    """Builder of a LightGCN-backbone model whose fusion is built on the conditioned features."""

    def build(
        graph: BipartiteGraph,
        item_features: torch.Tensor | None,
        modality_dims: Sequence[int],
        **hp: Any,
    ) -> Recommender:
        fusion_kwargs = _fusion_kwargs(hp)

        def factory(dims: Sequence[int], out_dim: int) -> torch.nn.Module:
            return build_fusion(kind, dims, out_dim=out_dim, **fusion_kwargs)

        return FusionLightGCN(graph, item_features, modality_dims, fusion_factory=factory, **hp)

    return build


def _sequential(**fixed: Any) -> Callable[..., Recommender]:
    """Builder of a :class:`SequentialRecommender` whose item side ``fixed`` names."""

    def build(graph: BipartiteGraph, item_features: torch.Tensor | None,
              modality_dims: Sequence[int], **hp: Any) -> Recommender:
        return SequentialRecommender(graph, item_features, modality_dims, **fixed, **hp)

    return build


_BUILDERS: dict[str, Callable[..., Recommender]] = {
    "metammf_gcn": _fused(FusionGCN, "metammf"),
    "metammf_mf": _fused(FusionMF, "metammf"),
    "lightgcn": LightGCN,
    "vbpr": VBPR,
    "bpr": BPRMF,
    "early_gcn": _fused(FusionGCN, "early"),
    "late_gcn": _fused(FusionGCN, "late"),
    "hybrid_gcn": _fused(FusionGCN, "hybrid"),
    "metammf_lightgcn": _fused_lightgcn("metammf"),
    "early_lightgcn": _fused_lightgcn("early"),
    "late_lightgcn": _fused_lightgcn("late"),
    "hybrid_lightgcn": _fused_lightgcn("hybrid"),
    "freedom": FREEDOM,
    "lattice": LATTICE,
    "mostpop": MostPop,
    "content_knn": ContentKNN,
    "crossan": _sequential(item_encoder="adapters", mixing="cross"),
    "crossan_id": _sequential(item_encoder="adapters", mixing="cross"),
    "indsan": _sequential(item_encoder="adapters", mixing="independent"),
    "sasrec": _sequential(item_encoder="ids"),
    "sasrec_text": _sequential(item_encoder="frozen"),
}


def build_model(
    name: str,
    graph: BipartiteGraph,
    item_features: torch.Tensor | None,
    modality_dims: Sequence[int],
    **hparams: Any,
) -> Recommender:
    """Build model ``name`` over ``graph`` and ``item_features`` [I, F] (may be None for ID-only
    models) with ``hparams`` over :func:`default_hparams`."""
    checked = checked_hparams(name, hparams)  # an unknown name fails here, naming the valid ones
    return _BUILDERS[name](graph, item_features, modality_dims, **checked)


def _field_type(default: Any) -> Any:
    """The type a hyperparameter's default declares (None, lists and the like: anything)."""
    return type(default) if isinstance(default, bool | int | float | str) else Any


def hparams_schema(name: str) -> type[BaseModel]:
    """A pydantic model of ``name``'s hyperparameters, typed by their defaults: an unknown
    name or a value of the wrong type fails naming the hyperparameter."""
    _check_name(name)
    if name not in _SCHEMAS:
        fields = {key: (_field_type(value), value) for key, value in _DEFAULTS[name].items()}
        _SCHEMAS[name] = create_model(f"{name}_hparams",
                                      __config__=ConfigDict(extra="forbid"), **fields)
    return _SCHEMAS[name]


_SCHEMAS: dict[str, type[BaseModel]] = {}


def checked_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` over :func:`default_hparams`, type-checked (:func:`hparams_schema`)."""
    _check_name(name)
    unknown = sorted(set(hparams) - set(_DEFAULTS[name]))
    if unknown:
        raise TypeError(
            f"model {name!r} got unknown hyperparameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(_DEFAULTS[name]))}"
        )
    try:
        validated = hparams_schema(name).model_validate(hparams)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})"
                             for e in error.errors())
        raise TypeError(f"model {name!r}: {problems}") from None
    return {**default_hparams(name), **validated.model_dump(include=set(hparams))}
