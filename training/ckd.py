"""CKD in training: the uni-modal teachers (trained once, cached) and the plug-in on a run.

A run with ``config.ckd`` set gets :class:`models.ckd.CounterfactualDistillation` attached to
its model before the first step (:func:`with_ckd` gives the trainer's ``init_model`` hook; the
trainer itself knows nothing of CKD). Its teachers: for each modality m, the run's own model
and setting (no CKD, seed ``ckd.teacher_seed``) trained through the same trainer in the view
that sees m alone from its first step (the authors' ``train_unimodal.py``); the student
distils from their final scoring contexts (its users; for a sequential model, its user
before every training item and after the last) and item vectors in that view. They are cached in
``$RECSYS_CACHE_DIR/teachers/<dataset>/`` under a digest of the setting, the training pairs
and the features, so every seed and every ablation of one setting reuses them;
``python -m training train-teachers`` trains them ahead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.base import Recommender
from models.ckd import CounterfactualDistillation, TeacherScores
from training.config import TrainConfig
from training.data import Dataset
from training.encoders.cache import cache_root
from training.report import headline
from training.trainer import train

log = logging.getLogger(__name__)

InitModel = Callable[[Recommender], Any]


def teacher_config(config: TrainConfig) -> TrainConfig:
    """The setting a teacher of ``config`` trains with: the same, without CKD, its own seed."""
    if config.ckd is None:
        raise ValueError("the config has no ckd section")
    return config.model_copy(update={"ckd": None, "seed": config.ckd.teacher_seed})


def teacher_paths(dataset: Dataset, config: TrainConfig) -> dict[str, Path]:
    """Each modality's teacher file, under one digest of the setting and the data."""
    setting = teacher_config(config).model_dump(exclude={"device"})
    digest = hashlib.sha256(json.dumps(setting, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(dataset.train).tobytes())
    features = dataset.feature_matrix()
    if features is not None:
        digest.update(np.ascontiguousarray(features).tobytes())
    folder = cache_root() / "teachers" / dataset.name
    return {modality: folder / f"{config.model}-{modality}-{digest.hexdigest()[:16]}.pt"
            for modality in dataset.modality_names}


def only_modality(modality: int) -> InitModel:
    """``init_model`` that puts a model in the view of one modality for the whole run."""
    def init(model: Recommender) -> None:
        model.use_view({modality})
    return init


def train_teachers(dataset: Dataset, config: TrainConfig, *, progress: bool = True,
                   retrain: bool = False) -> list[Path]:
    """One teacher file per modality (in the dataset's order), trained where missing."""
    if len(dataset.modality_names) < 2:
        raise ValueError(f"CKD needs at least two modalities; {dataset.name} has "
                         f"{dataset.modality_names}")
    setting = teacher_config(config)
    paths = list(teacher_paths(dataset, config).values())
    for m, (modality, path) in enumerate(zip(dataset.modality_names, paths, strict=True)):
        if path.exists() and not retrain:
            log.info("teacher %s: reusing %s", modality, path)
            continue
        log.info("teacher %s: training %s on %s alone", modality, setting.model, modality)
        result = train(dataset, setting, progress=progress, init_model=only_modality(m))
        with torch.no_grad():  # a sequential teacher keeps its user before every item
            contexts, items = result.model.eval().context_embeddings()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save({"contexts": contexts.cpu(), "items": items.cpu(), "modality": modality,
                    "setting": setting.model_dump(), "valid": headline(result.valid_report),
                    "test": headline(result.test_report), "best_epoch": result.best_epoch,
                    "train_seconds": result.train_seconds}, partial)
        partial.replace(path)  # a killed run leaves no half-written teacher behind
    return paths


def load_teacher(path: Path) -> tuple[TeacherScores, dict[str, Any]]:
    """The teacher's scores and what was recorded about it (setting, metrics, time)."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    # "users": a teacher cached before scoring contexts (one per user, the same rows)
    contexts = stored.pop("contexts") if "contexts" in stored else stored.pop("users")
    scores = TeacherScores(contexts, stored.pop("items"))
    return scores, stored


def with_ckd(dataset: Dataset, config: TrainConfig, init_model: InitModel | None = None,
             *, progress: bool = True) -> InitModel | None:
    """``init_model`` for the trainer: ``init_model`` (e.g. a warm start), then, when
    ``config.ckd`` is set, CKD attached (its teachers trained first where missing)."""
    settings = config.ckd
    if settings is None:
        return init_model
    teachers = None
    if settings.teachers:
        teachers = [load_teacher(p)[0]
                    for p in train_teachers(dataset, config, progress=progress)]
    generic_users = torch.as_tensor(np.unique(dataset.train[:, 0]), dtype=torch.long)

    def init(model: Recommender) -> None:
        if init_model is not None:
            init_model(model)
        if model.num_modalities < 2:
            raise ValueError(f"--ckd needs a multimodal model with modality views; "
                             f"{config.model} has {model.num_modalities}")
        device = next(model.parameters()).device
        model.add_loss_plugin(CounterfactualDistillation(
            teachers=None if teachers is None else [
                TeacherScores(t.users.to(device), t.items.to(device)).prepared()
                for t in teachers],
            generic_users=generic_users, num_items=dataset.num_items,
            weight=settings.weight, beta=settings.beta, temperature=settings.temperature,
            generic_triples=settings.generic_triples, batch_triples=settings.batch_triples,
            specific=settings.specific,
            generic=settings.generic and settings.teachers, reweight=settings.reweight,
            seed=config.seed))
    return init
