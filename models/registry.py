"""Model registry: one name per model, its config class and one builder.

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

Every model's hyperparameters are a pydantic config class beside the model class (a
:class:`models.base.ModelConfig`, e.g. :class:`models.lightgcn.LightGCNConfig`; the fused
models add :class:`models.fusion.StaticFusionConfig` or ``MetaFusionConfig``): an unknown
name, or a value of the wrong type or outside its range, fails before anything is built, naming
the hyperparameter and what it got.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import ValidationError

from models.base import BipartiteGraph, ModelConfig, Recommender
from models.content_knn import ContentKNN, ContentKNNConfig
from models.crossan import (
    CROSSANConfig,
    CROSSANIDConfig,
    SASRecConfig,
    SASRecTextConfig,
    SequentialRecommender,
)
from models.freedom import FREEDOM, FREEDOMConfig
from models.fusion import build_fusion
from models.fusion_lightgcn import FusionLightGCN
from models.fusion_lightgcn_config import FusionLightGCNConfig, MetaMMFLightGCNConfig
from models.lattice import LATTICE, LATTICEConfig
from models.lightgcn import LightGCN, LightGCNConfig
from models.metammf import (
    FusedItemRecommender,
    FusionGCN,
    FusionGCNConfig,
    FusionMF,
    MetaMMFGCNConfig,
    MetaMMFMFConfig,
)
from models.mf import BPRMF, VBPR, BPRConfig, VBPRConfig
from models.names import MODEL_NAMES
from models.popularity import MostPop, MostPopConfig

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
    return hparams_schema(name)().model_dump()


def hparams_schema(name: str) -> type[ModelConfig]:
    """The config class of model ``name`` (its typed hyperparameters)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(_MODELS)}")
    return _MODELS[name][0]


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


Builder = Callable[..., Recommender]

# name -> (its typed hyperparameters, its builder)
_MODELS: dict[str, tuple[type[ModelConfig], Builder]] = {
    "metammf_gcn": (MetaMMFGCNConfig, _fused(FusionGCN, "metammf")),
    "metammf_mf": (MetaMMFMFConfig, _fused(FusionMF, "metammf")),
    "lightgcn": (LightGCNConfig, LightGCN),
    "vbpr": (VBPRConfig, VBPR),
    "bpr": (BPRConfig, BPRMF),
    "early_gcn": (FusionGCNConfig, _fused(FusionGCN, "early")),
    "late_gcn": (FusionGCNConfig, _fused(FusionGCN, "late")),
    "hybrid_gcn": (FusionGCNConfig, _fused(FusionGCN, "hybrid")),
    "metammf_lightgcn": (MetaMMFLightGCNConfig, _fused_lightgcn("metammf")),
    "early_lightgcn": (FusionLightGCNConfig, _fused_lightgcn("early")),
    "late_lightgcn": (FusionLightGCNConfig, _fused_lightgcn("late")),
    "hybrid_lightgcn": (FusionLightGCNConfig, _fused_lightgcn("hybrid")),
    "freedom": (FREEDOMConfig, FREEDOM),
    "lattice": (LATTICEConfig, LATTICE),
    "mostpop": (MostPopConfig, MostPop),
    "content_knn": (ContentKNNConfig, ContentKNN),
    "crossan": (CROSSANConfig, _sequential(item_encoder="adapters", mixing="cross")),
    "crossan_id": (CROSSANIDConfig, _sequential(item_encoder="adapters", mixing="cross")),
    "indsan": (CROSSANConfig, _sequential(item_encoder="adapters", mixing="independent")),
    "sasrec": (SASRecConfig, _sequential(item_encoder="ids")),
    "sasrec_text": (SASRecTextConfig, _sequential(item_encoder="frozen")),
}

if tuple(_MODELS) != MODEL_NAMES:  # the torch-free list the command line reads
    raise RuntimeError(f"models/names.py lists {MODEL_NAMES}, the registry {tuple(_MODELS)}")


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
    return _MODELS[name][1](graph, item_features, modality_dims, **checked)


def checked_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` over :func:`default_hparams`, validated by the model's config class: an
    unknown hyperparameter or a value of the wrong type fails with ``TypeError``, a value out of
    its range or choices with ``ValueError``, each naming the field."""
    schema = hparams_schema(name)
    unknown = sorted(set(hparams) - set(schema.model_fields))
    if unknown:
        raise TypeError(
            f"model {name!r} got unknown hyperparameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(schema.model_fields))}"
        )
    try:
        return schema.model_validate(hparams).model_dump()
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})"
                             for e in error.errors())
        # a value out of its range or choices is a ValueError, as the model classes raise it
        out_of_range = all(e["type"] in _RANGE_ERRORS for e in error.errors())
        raise (ValueError if out_of_range else TypeError)(f"model {name!r}: {problems}") from None


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                 "literal_error"}
