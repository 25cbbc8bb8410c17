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


class ConfigError(ValueError):
    """A configuration the run cannot start from, in one line: the file (and line and column
    where the file is not valid JSON/TOML) or the flag, the field, and the fix."""


# the flags' names where they differ from the fields', accepted as keys of a config file too
ALIASES = {"cold_start": "cold_start_fraction", "hparam": "hparams"}


def closest(name: str, known: list[str] | set[str]) -> str:
    """``"; did you mean a, b?"`` naming the known names closest to ``name`` (or nothing)."""
    close = difflib.get_close_matches(name, sorted(known), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def canonical_keys(fields: dict[str, Any], source: str) -> dict[str, Any]:
    """``fields`` with flag spellings (``cold-start``, ``cold_start``) turned into field names
    (``cold_start_fraction``); a field given under two names raises :class:`ConfigError`."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = str(key).replace("-", "_")
        name = ALIASES.get(name, name)
        if name in out:
            raise ConfigError(f"{source}: {name} is given twice (as {key!r} too)")
        out[name] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML file of :class:`TrainConfig` fields (flag names accepted as keys);
    a missing file or invalid JSON/TOML raises :class:`ConfigError` naming the position."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist"
                          + (" (it is a folder)" if path.exists() else ""))
    text = path.read_text()
    try:
        fields = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") \
            from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"{path}: a config is an object of training fields, got "
                          f"{type(fields).__name__}")
    return canonical_keys(fields, str(path))


def build_config(fields: dict[str, Any], sources: dict[str, str] | None = None) -> TrainConfig:
    """:class:`TrainConfig` of ``fields``; a bad one raises :class:`ConfigError` in one line
    naming where each wrong field came from (``sources``: field -> file or flag) and, for an
    unknown name, the closest known ones."""
    from pydantic import ValidationError

    try:
        return TrainConfig(**fields)
    except ValidationError as error:
        problems = [_problem(e, sources or {}) for e in error.errors()]
        raise ConfigError("; ".join(problems)) from None


def _problem(error: Any, sources: dict[str, str]) -> str:
    loc = [str(p) for p in error["loc"]]
    where = sources.get(loc[0], "config") if loc else "config"
    field = ".".join(loc)
    if error["type"] == "extra_forbidden":
        section: type[BaseModel] = TrainConfig
        for part in loc[:-1]:
            section = {"ckd": CKDConfig, "refit": RefitConfig}.get(part, section)
        return (f"{where}: unknown field {field!r}"
                + closest(loc[-1], set(section.model_fields)))
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{where}: {field}: {error['msg']}{shown}"


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
    for given, value in parse_hparams(pairs).items():
        name = ALIASES.get(given.replace("-", "_"), given.replace("-", "_"))
        if name not in known:
            raise ValueError(f"--set {given}: not a training field{closest(name, known)} "
                             "(model hyperparameters go in --hparam)")
        out[name] = value
    return out


def flatten_fields(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config fields as ``{"a.b": value}`` (``refit.epochs``, ``hparams.embed_dim``):
    what MLflow's parameters and ``compare``'s differing columns list."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            out.update(flatten_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
