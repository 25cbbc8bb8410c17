"""One trainer for every model: mini-batch BPR, early stopping on valid Recall@20.

The trainer knows a model only through :class:`models.base.Recommender`: ``forward()`` gives
all user and item embeddings, scores are inner products.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.base import BipartiteGraph, Recommender
from models.registry import build_model
from training.config import TrainConfig
from training.data import Dataset
from training.device import choose_device
from training.evaluation import evaluate
from training.losses import bpr_loss
from training.sampling import BPRSampler

EARLY_STOP_METRIC = "recall@20"


@dataclass
class TrainResult:
    model: Recommender
    config: TrainConfig
    best_epoch: int
    epochs_run: int
    seconds_per_epoch: float
    train_seconds: float
    valid_metrics: dict[str, float]
    test_metrics: dict[str, float]
    cold_metrics: dict[str, float] | None = None
    cold_only_metrics: dict[str, float] | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "seconds_per_epoch": round(self.seconds_per_epoch, 4),
            "train_seconds": round(self.train_seconds, 2),
            "valid": self.valid_metrics,
            "test": self.test_metrics,
            "cold_start_test": self.cold_metrics,
            "cold_start_test_among_new_items": self.cold_only_metrics,
        }


def model_inputs(
    dataset: Dataset, config: TrainConfig
) -> tuple[BipartiteGraph, torch.Tensor | None, dict[str, Any]]:
    """What ``build_model`` takes for this dataset: training graph, features, hyperparameters."""
    graph = BipartiteGraph(
        dataset.num_users, dataset.num_items, torch.as_tensor(dataset.train.T.copy())
    )
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


def evaluate_embeddings(
    users: torch.Tensor, items: torch.Tensor, dataset: Dataset, split: str, batch_size: int = 2048
) -> dict[str, float]:
    """Metrics on ``valid``, ``test``, ``cold`` (test interactions with held-out items, ranked
    against all items) or ``cold_only`` (the same, ranked among the held-out items only)."""
    if split == "valid":
        relevant, seen = dataset.matrix("valid"), dataset.matrix("train")
    else:
        seen = dataset.matrix("train", "valid")
        relevant = dataset.matrix("test") if split == "test" else (
            dataset.pairs_matrix(dataset.cold_test())
        )
        if split == "cold_only":  # a ranking of the held-out items alone
            cold = dataset.cold_items
            items = items[torch.as_tensor(cold, device=items.device)]
            relevant, seen = relevant[:, cold], seen[:, cold]
    return evaluate(users, items, relevant, seen, batch_size=batch_size)


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


def train(dataset: Dataset, config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Fit ``config.model`` on ``dataset.train``; keep the best epoch on validation."""
    device = choose_device(config.device)
    np.random.seed(config.seed)
    model = build_for(dataset, config, device)
    warm_items = np.setdiff1d(np.arange(dataset.num_items), dataset.cold_items)
    sampler = BPRSampler(
        dataset.train, dataset.num_items, candidate_items=warm_items, seed=config.seed
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)

    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    best_valid: dict[str, float] = {}
    history: list[dict[str, float]] = []
    train_seconds = 0.0
    bar = tqdm(range(1, config.max_epochs + 1), desc=config.model, disable=not progress)
    for epoch in bar:
        model.train()
        started = time.perf_counter()
        losses = []
        for users, positives, negatives in sampler.epoch(config.batch_size):
            user_emb, item_emb = model()
            u = torch.as_tensor(users, device=device)
            pos = torch.as_tensor(positives, device=device)
            neg = torch.as_tensor(negatives, device=device)
            loss = bpr_loss(user_emb[u], item_emb[pos], item_emb[neg])
            if config.l2 > 0:
                loss = loss + config.l2 * _l2(model, config, u, torch.cat([pos, neg]))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        train_seconds += time.perf_counter() - started

        valid = evaluate_split(model, dataset, "valid", config.eval_batch_size)
        score = valid[EARLY_STOP_METRIC]
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **valid})
        if score > best_score:
            best_score, best_epoch, best_valid = score, epoch, valid
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(
            loss=f"{np.mean(losses):.4f}", r20=f"{score:.4f}", best=f"{best_score:.4f}@{best_epoch}"
        )
        if epoch - best_epoch >= config.patience:
            break

    model.load_state_dict(best_state)
    test = evaluate_split(model, dataset, "test", config.eval_batch_size)
    has_cold = bool(len(dataset.cold_items) and len(dataset.cold_test()))
    cold, cold_only = (
        (
            evaluate_split(model, dataset, "cold", config.eval_batch_size),
            evaluate_split(model, dataset, "cold_only", config.eval_batch_size),
        )
        if has_cold
        else (None, None)
    )
    epochs_run = len(history)
    return TrainResult(
        model=model,
        config=config,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        seconds_per_epoch=train_seconds / max(epochs_run, 1),
        train_seconds=train_seconds,
        valid_metrics=best_valid,
        test_metrics=test,
        cold_metrics=cold,
        cold_only_metrics=cold_only,
        history=history,
    )
