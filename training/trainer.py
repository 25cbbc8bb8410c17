"""One trainer for every model: mini-batches of BPR triples, early stopping on valid Recall@20.

The trainer knows a model only through :class:`models.base.Recommender`: the model returns its
named loss terms for a batch (``training_losses``; the trainer adds eq. 19's L2 and sums them),
and ``forward()`` gives all user and item embeddings whose inner products are the scores.
Training-free models (``trainable`` False: MostPop, content kNN) are evaluated as built.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.base import BipartiteGraph, Recommender, TrainingBatch
from models.registry import build_model
from training import distributed
from training.calibration import (
    choose_serving_rules,
    epoch_validation,
    supports_calibration,
    supports_knn_scale,
)
from training.config import TrainConfig
from training.data import Dataset
from training.device import choose_device
from training.evaluation import SELECTION_METRIC
from training.progress import EpochProgress, Phases, interactive, likely_last_epoch  # noqa: F401
from training.report import all_rows_and_share, evaluate_embeddings, warm_cold_report
from training.sampling import BPRSampler

EARLY_STOP_METRIC = SELECTION_METRIC

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: Recommender
    config: TrainConfig
    best_epoch: int
    epochs_run: int
    seconds_per_epoch: float
    train_seconds: float  # the training loops of every epoch
    valid_metrics: dict[str, float]
    test_metrics: dict[str, float]
    valid_report: dict[str, Any] = field(default_factory=dict)
    test_report: dict[str, Any] = field(default_factory=dict)
    # the test split with every user embedded from its whole history before the test item
    # (validation included), as the service embeds a user: TrainResult.served_test_report
    served_test_report: dict[str, Any] = field(default_factory=dict)
    slot_share: float = 0.0  # the reserved new-item share the lists were scored with
    diagnostics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    knn_calibration: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    validation_seconds: float = 0.0  # every epoch's validation (and new-item scale) together
    final_seconds: float = 0.0  # after the last epoch: serving rules chosen, reports scored
    # wall seconds of each phase (training.progress.Phases: build, epochs, final, then the
    # pipeline's load_data, write, export, track); the summary adds them up to the wall time
    timings: dict[str, float] = field(default_factory=dict)
    tracking_run: str | None = None  # the MLflow run that logged it (training.tracking)

    @property
    def cold_metrics(self) -> dict[str, float] | None:
        """Test rows whose item has no training interaction, ranked among all items."""
        return self.test_report.get("cold")

    @property
    def cold_only_metrics(self) -> dict[str, float] | None:
        """The same rows, ranked among the items without training interactions only."""
        return self.test_report.get("cold_among_cold")

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "seconds_per_epoch": round(self.seconds_per_epoch, 4),
            "train_seconds": round(self.train_seconds, 2),
            "validation_seconds": round(self.validation_seconds, 2),
            "final_seconds": round(self.final_seconds, 2),
            "valid": self.valid_metrics,
            "test": self.test_metrics,
            "valid_report": self.valid_report,
            "test_report": self.test_report,
            "test_served": self.served_test_report.get("all"),
            "test_served_report": self.served_test_report,
            "slot_share": self.slot_share,
            "diagnostics": self.diagnostics,
            "new_item_scale": self.calibration,
            "knn_scale": self.knn_calibration,
        }


def model_inputs(
    dataset: Dataset, config: TrainConfig
) -> tuple[BipartiteGraph, torch.Tensor | None, dict[str, Any]]:
    """What ``build_model`` takes for this dataset: training graph, features, hyperparameters."""
    # edges oldest first where the data knows the order (the sequential models read it)
    train = (dataset.train if dataset.train_time is None
             else dataset.train[np.argsort(dataset.train_time, kind="stable")])
    graph = BipartiteGraph(dataset.num_users, dataset.num_items, torch.as_tensor(train.T.copy()))
    features = dataset.feature_matrix()
    hparams = dict(config.hparams)
    if len(dataset.cold_items):
        hparams["cold_items"] = torch.as_tensor(dataset.cold_items)
    return graph, None if features is None else torch.as_tensor(features), hparams


def build_for(dataset: Dataset, config: TrainConfig, device: torch.device) -> Recommender:
    """Construct ``config.model`` over the dataset's training graph and features."""
    torch.manual_seed(config.seed)
    graph, features, hparams = model_inputs(dataset, config)
    return build_model(config.model, graph, features, dataset.modality_dims, **hparams).to(device)


@torch.no_grad()
def embeddings(model: Recommender) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    users, items = model()
    return users.detach(), items.detach()


@torch.no_grad()
def users_after(model: Recommender, users: torch.Tensor, pairs: np.ndarray) -> torch.Tensor:
    """``users``, or, for a model whose users read an ordered history, its user vectors once
    ``pairs`` (user, item; oldest first) are appended (``Recommender.user_embeddings_after``)."""
    model.eval()
    after = model.user_embeddings_after(torch.as_tensor(pairs, device=users.device))
    return users if after is None else after.detach()


def evaluate_split(
    model: Recommender, dataset: Dataset, split: str, batch_size: int = 2048
) -> dict[str, float]:
    """:func:`evaluate_embeddings` of the model's current embeddings (eval mode)."""
    return evaluate_embeddings(*embeddings(model), dataset, split, batch_size)


def _l2(model: Recommender, config: TrainConfig, users: torch.Tensor, items: torch.Tensor):
    """The L2 term of eq. 19 in the configured scope (see ``TrainConfig.l2_scope``)."""
    if config.l2_scope == "all":
        return torch.stack([p.pow(2).sum() for p in model.parameters()]).sum()
    return model.l2_penalty(users, items)


def training_sampler(dataset: Dataset, config: TrainConfig) -> BPRSampler:
    """BPR triples of the training split, negatives from items with training interactions.

    An item nobody has interacted with (held out, or new in the split) is no evidence of
    dislike, and a model that scores all such items through one shared unknown-item vector is
    pushed down as a whole by them (measured on TikTok: MetaMMF on LightGCN with
    warm_content=0 peaked at 0.089 valid Recall@20 with them, 0.096 without).
    """
    warm_items = np.flatnonzero(np.bincount(dataset.train[:, 1], minlength=dataset.num_items))
    return BPRSampler(
        dataset.train, dataset.num_items, candidate_items=warm_items, seed=config.seed
    )


class TrainingStep(nn.Module):
    """The named loss terms of one batch (the model's own plus eq. 19's L2) as a module's
    forward, so that DistributedDataParallel can wrap it and average the gradients."""

    def __init__(self, model: Recommender, config: TrainConfig):
        super().__init__()
        self.model, self.config = model, config

    def forward(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        named = self.model.training_losses(batch)
        if self.config.l2 > 0:
            named["l2"] = self.config.l2 * _l2(self.model, self.config, batch.users, batch.items)
        return named


def run_epoch(
    model: Recommender,
    sampler: BPRSampler,
    optimiser: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device,
    step: nn.Module | None = None,
    ctx: distributed.Context = distributed.SINGLE,
) -> tuple[list[float], dict[str, list[float]]]:
    """One pass over the training triples; returns the loss of every batch and of every
    named term (the model's own plus eq. 19's L2) per batch. Distributed (``ctx``), every
    rank draws the same batch and ``step`` (DDP around :class:`TrainingStep`) sees its slice."""
    model.train()
    step = step or TrainingStep(model, config)
    terms: dict[str, list[float]] = {}
    losses = []
    for users, positives, negatives in sampler.epoch(config.batch_size):
        part = ctx.shard(len(users))
        batch = TrainingBatch(
            torch.as_tensor(users[part], device=device),
            torch.as_tensor(positives[part], device=device),
            torch.as_tensor(negatives[part], device=device),
        )
        named = step(batch)
        loss = torch.stack(list(named.values())).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        for name, value in named.items():
            terms.setdefault(name, []).append(float(value.detach()))
    return losses, terms


def validate_epoch(model: Recommender, data: Dataset, config: TrainConfig) -> dict[str, float]:
    """Validation metrics of one epoch, as served: a model with a new-item scale at its best
    scale of :data:`training.calibration.EPOCH_GRID` (all of them scored in one pass)."""
    if supports_calibration(model):
        return epoch_validation(model, data, slot_share=config.new_item_slots,
                                min_share=config.new_item_share,
                                batch_size=config.eval_batch_size)
    return all_rows_and_share(*embeddings(model), data, "valid", config.eval_batch_size,
                              config.new_item_slots)[0]


def _refit_result(
    model: Recommender, dataset: Dataset, config: TrainConfig, history: list[dict[str, float]],
    epochs: int, train_seconds: float,
) -> TrainResult:
    """A refit's result: the serving rules set as chosen, the test split reported (validation
    is training data now, so no validation report; a test user's vector already holds its
    validation item, so both protocols are one)."""
    refit = config.refit
    with torch.no_grad():
        if refit.knn_scale is not None and supports_knn_scale(model):
            model.knn_scale.fill_(refit.knn_scale)
        if refit.cold_scale is not None and supports_calibration(model):
            model.cold_scale.fill_(refit.cold_scale)
    users, items = embeddings(model)
    test_report = warm_cold_report(users, items, dataset, "test", config.eval_batch_size,
                                   config.new_item_slots)
    return TrainResult(
        model=model, config=config, best_epoch=epochs, epochs_run=len(history),
        seconds_per_epoch=train_seconds / max(len(history), 1), train_seconds=train_seconds,
        valid_metrics={}, test_metrics=test_report["all"], test_report=test_report,
        served_test_report=test_report, slot_share=config.new_item_slots,
        diagnostics=model.diagnostics(), history=history,
    )


def train(
    dataset: Dataset,
    config: TrainConfig,
    *,
    progress: bool = True,
    init_model: Callable[[Recommender], Any] | None = None,
    phases: Phases | None = None,
) -> TrainResult:
    """Fit ``config.model`` on ``dataset.train``; keep the best epoch on validation.

    Models with a new-item scale (:mod:`training.calibration`) are calibrated on validation
    before every validation and once more, with the whole trade-off curve, at the end; models
    with a content-kNN part get the factor on its weight chosen on validation before that.
    ``init_model(model)`` runs once on the built model before training (a warm start,
    :mod:`training.warm_start`). With ``config.refit`` (validation already in ``dataset.train``)
    it trains the refit's epochs, keeps the last, and sets the refit's serving rules.
    ``phases`` times the phases and announces the post-training one (:mod:`training.progress`).
    """
    ctx = distributed.context()
    phases = phases or Phases(show=progress and ctx.writes)
    build_started = time.perf_counter()
    device = distributed.device_for(ctx, choose_device(config.device))
    np.random.seed(config.seed)
    model = build_for(dataset, config, device)
    if init_model is not None:
        init_model(model)
    sampler = training_sampler(dataset, config)
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    train_seconds = validation_seconds = 0.0
    refit = config.refit
    epochs = (refit.epochs if refit else config.max_epochs) if model.trainable else 0
    step: nn.Module | None = None
    if model.trainable:
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
        step = TrainingStep(model, config)
        if ctx.active:  # find_unused: a model's auxiliary terms may leave parts untouched
            step = DistributedDataParallel(step, find_unused_parameters=True)
    # what every epoch is validated on (a fixed sample of users on large data sets)
    epoch_data = (dataset if config.epoch_valid_users is None
                  else dataset.with_valid_sample(config.epoch_valid_users, config.seed))
    bar = EpochProgress(config.model + (" (refit)" if refit else ""), max_epochs=epochs,
                        patience=config.patience, refit=refit is not None,
                        enabled=progress and ctx.writes)
    phases.seconds["build"] = time.perf_counter() - build_started
    loop_started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.begin_epoch()
        losses, terms = run_epoch(model, sampler, optimiser, config, device, step, ctx)
        seconds = time.perf_counter() - started
        train_seconds += seconds
        record = {"epoch": epoch, "loss": float(np.mean(losses)),
                  **{f"loss_{name}": float(np.mean(v)) for name, v in terms.items()},
                  "train_seconds": round(seconds, 4)}
        history.append(record)
        if refit:  # nothing to validate on: every epoch is the newest, the last is kept
            best_epoch = epoch
            bar.update(epoch, record["loss"], seconds)
            continue
        started = time.perf_counter()
        valid = validate_epoch(model, epoch_data, config)
        valid_seconds = time.perf_counter() - started
        validation_seconds += valid_seconds
        score = valid[EARLY_STOP_METRIC]
        record.update(valid, valid_seconds=round(valid_seconds, 4))
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.update(epoch, record["loss"], seconds, valid=score, valid_seconds=valid_seconds,
                   best=best_score, best_epoch=best_epoch)
        if epoch - best_epoch >= config.patience:
            break
    bar.close()
    phases.seconds["epochs"] = time.perf_counter() - loop_started
    show = progress and ctx.writes
    label = ("setting the refit's serving rules, scoring the test report" if refit else
             "choosing the serving rules on validation, scoring the warm/cold reports")
    with phases.phase("final", label):
        if refit is not None:
            result = _refit_result(model, dataset, config, history, best_epoch, train_seconds)
        else:
            model.load_state_dict(best_state)
            result = _final_result(model, dataset, config, show and interactive())
            result.best_epoch, result.epochs_run, result.history = (best_epoch, len(history),
                                                                   history)
            result.seconds_per_epoch = train_seconds / max(len(history), 1)
            result.train_seconds, result.validation_seconds = train_seconds, validation_seconds
    result.final_seconds = phases.seconds["final"]
    result.timings = phases.seconds
    return result


def _final_result(model: Recommender, dataset: Dataset, config: TrainConfig,
                  show: bool) -> TrainResult:
    """The early-stopped run's end, its best epoch loaded: serving rules chosen on validation
    (models that have them), the validation and test reports under both protocols."""
    # today's protocol: a test user is its training vector (a sequence model has always read
    # the validation item); as served: every model's user after its validation item too
    knn_calibration = calibration = None
    if supports_knn_scale(model) or supports_calibration(model):
        if show:
            log.info("choosing the serving rules on all %d validation users (one ranking pass "
                     "per split)", len(np.unique(dataset.valid[:, 0])))
        choice = choose_serving_rules(
            model, dataset, slot_share=config.new_item_slots,
            choose_slots=config.choose_new_item_slots, min_share=config.new_item_share,
            with_curves=config.report_curves, batch_size=config.eval_batch_size, progress=show)
        knn_calibration, calibration = choice.knn, choice.cold
        slot_share, valid_report, test_report = (choice.slot_share, choice.valid_report,
                                                 choice.test_report)
        users, items = embeddings(model)  # at the chosen rules
        served_users = users_after(model, users, dataset.valid)
    else:
        users, items = embeddings(model)
        served_users = users_after(model, users, dataset.valid)
        slot_share = config.new_item_slots
        valid_report = warm_cold_report(users, items, dataset, "valid", config.eval_batch_size,
                                        slot_share)
        test_report = warm_cold_report(served_users if model.sequential_user else users,
                                       items, dataset, "test", config.eval_batch_size,
                                       slot_share)
    served_test_report = (
        test_report if model.sequential_user
        else warm_cold_report(served_users, items, dataset, "test", config.eval_batch_size,
                              slot_share))
    return TrainResult(
        model=model, config=config, best_epoch=0, epochs_run=0, seconds_per_epoch=0.0,
        train_seconds=0.0, valid_metrics=valid_report["all"], test_metrics=test_report["all"],
        valid_report=valid_report, test_report=test_report,
        served_test_report=served_test_report, slot_share=slot_share,
        diagnostics=model.diagnostics(), calibration=calibration,
        knn_calibration=knn_calibration,
    )
