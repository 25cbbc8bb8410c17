"""Training configuration: one typed object, from flags or a JSON/TOML file."""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CKDConfig(BaseModel):
    """CKD's modality-balanced distillation (:mod:`models.ckd`, :mod:`training.ckd`); the
    defaults are the authors' (``kd_ratio``, ``kl``, ``pred_temp``, 5,000 generic triples)."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(0.01, gt=0, description="lambda: the distillation terms' weight")
    beta: float = Field(5.0, ge=0, description="the generic term's weight inside them")
    temperature: float = Field(0.1, gt=0, description="of the preference probabilities")
    generic_triples: int = Field(5000, ge=1, description="random triples per step")
    batch_triples: int | None = Field(
        None, ge=1, description="distil on at most this many of the batch's triples a step, "
        "drawn at random (None: all; a cost knob for models whose views are whole passes)")
    teachers: bool = Field(True, description="False: each view learns from the labels")
    specific: bool = True
    generic: bool = True
    reweight: bool = Field(True, description="counterfactual modality weights (else all 1)")
    teacher_seed: int = Field(0, description="teachers are trained once with this seed and "
                              "reused by every run of the same setting")


class RefitConfig(BaseModel):
    """The served bundle of a chosen setting: trained again on every interaction up to the
    data cutoff, validation included, for a fixed number of epochs (nothing is left to stop
    on), the last kept, with the serving rules validation chose for the early-stopped run
    (``python -m training select`` writes it)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(ge=1, description="epochs to train (the chosen run's best epoch)")
    knn_scale: float | None = Field(None, gt=0, description="the chosen kNN factor")
    cold_scale: float | None = Field(None, gt=0, description="the chosen new-item scale")


class TrainConfig(BaseModel):
    """Everything a training run depends on; recorded in the bundle manifest."""

    model_config = ConfigDict(extra="forbid")

    model: str = "metammf_gcn"
    max_epochs: int = Field(300, ge=1)
    batch_size: int = Field(3000, ge=1)
    # Defaults: MetaMMF_GCN's validation-chosen setting on TikTok (benchmarks/results/tuning.json).
    # The paper's lr 1e-3 lost to 5e-3 in a first sweep (see COMMON_GRID in benchmarks/quality.py).
    lr: float = Field(5e-3, gt=0)
    l2: float = Field(1e-5, ge=0, description="lambda of eq. 19")
    l2_scope: Literal["batch", "all"] = Field(
        "batch",
        description="batch: the rows a batch touches + shared weights (Recommender.l2_penalty); "
        "all: every parameter at every step, eq. 19 as written",
    )
    patience: int = Field(20, ge=1, description="epochs without a better valid Recall@20")
    seed: int = 2024
    device: str = "auto"
    cold_start_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of items held out of training (cold-start protocol)"
    )
    cold_start_fold: int | None = Field(
        None,
        ge=0,
        description="hold out this fold of round(1 / cold_start_fraction) disjoint item folds "
        "(one fixed permutation) instead of a random share drawn with the seed",
    )
    new_item_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="exposure floor: the least share of validation top-20 slots that items "
        "without training interactions must hold when the new-item scale is chosen (0 = the "
        "scale with the best validation Recall@20 wins); see training.calibration",
    )
    new_item_slots: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="reserved share of every list for items without training interactions, "
        "filled by their own ranking: in every prefix of p positions at least floor(share * p) "
        "are new items (a product decision; stored in the bundle and applied by the service "
        "and by every report); see bundle.serving_rules",
    )
    choose_new_item_slots: bool = Field(
        False,
        description="choose the reserved share on validation (jointly with the new-item "
        "scale, after training) among the shares of training.calibration.SLOT_GRID that are at "
        "least new_item_slots, which becomes a floor (a business rule); the chosen share is "
        "stored in the bundle",
    )
    report_curves: bool = Field(
        True,
        description="after training, score the test split at every point of the calibration "
        "curves (reports only; the choices use validation). Off: test at the chosen point only",
    )
    epoch_valid_users: int | None = Field(
        None,
        ge=1,
        description="validate each epoch (early stopping, per-epoch new-item scale) on at most "
        "this many validation users, a fixed random sample; the final choice and every report "
        "use all of them (None: all, every epoch)",
    )
    eval_batch_size: int = Field(2048, ge=1)
    feature_set: Literal["dataset", "title_fields"] = Field(
        "dataset",
        description="item features: the dataset's own files, or per-layer frozen-encoder "
        "states of two title fields (CROSSAN's experts); see training.feature_sets",
    )
    state_layers: list[int] = Field(
        default_factory=lambda: [0, 2, 4, 6],
        description="title_fields: the hidden states kept (0 = embeddings; MiniLM has 0..6)",
    )
    state_pooling: Literal["mean", "cls"] = Field("mean", description="title_fields: pooling")
    hparams: dict[str, Any] = Field(default_factory=dict, description="model hyperparameters")
    ckd: CKDConfig | None = Field(None, description="modality-balanced distillation (CKD)")
    refit: RefitConfig | None = Field(
        None, description="train on training + validation for a fixed number of epochs with "
        "fixed serving rules (the served bundle once validation has chosen); new_item_slots is "
        "then the chosen share")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML file of :class:`TrainConfig` fields."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        return tomllib.loads(text)
    return json.loads(text)


def parse_hparams(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (``--hparam``); values parsed as JSON when they can be (numbers,
    booleans), else kept as strings. A pair without ``=`` raises ``ValueError``."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--hparam expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def apply_settings(fields: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """``fields`` with ``field=value`` pairs (``--set``) over it: any :class:`TrainConfig` field
    by its own name, values parsed as JSON when they can be (``--set refit='{"epochs": 5}'``).
    A name that is no field raises ``ValueError`` naming the closest ones, so a new training
    knob needs one field and nothing in the CLI."""
    out = dict(fields)
    known = set(TrainConfig.model_fields)
    for name, value in parse_hparams(pairs).items():
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"--set {name}: not a training field{hint} "
                             "(model hyperparameters go in --hparam)")
        out[name] = value
    return out
