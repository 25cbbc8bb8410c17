"""Nightly retraining: base data + what the service logged -> candidate -> quality gate -> publish.

``python -m training retrain`` runs :func:`retrain`:

1. **Data.** The base dataset (the files) plus every item and interaction in the service's
   store (the store holds only what arrived online, never the base data). Interactions with
   an item that is neither in the base catalog nor stored are dropped and counted.
2. **Recent holdout.** The newest ``holdout_share`` of the interactions logged after the live
   bundle's data cutoff are kept out of training: neither the live bundle nor the candidate has
   seen them, so they score both fairly on what users did most recently.
3. **Candidate.** Trained with the configuration, warm-started from the live bundle's weights
   when it is the same model (:mod:`training.warm_start`: ID-table rows matched by external
   id, new rows freshly initialised; ``warm_start=False`` trains from scratch).
4. **Gate** (:func:`gate`). Both bundles are scored by the same code, from their stored
   embeddings, on the base catalog: Recall@20 on the fixed base validation split (training
   items masked) and on the recent holdout (every known interaction masked; rows whose user or
   item either bundle does not know are left out, so both are scored on the same rows). The
   candidate must beat the popularity floor (MostPop from its training data) on the validation
   split and be no worse than the live bundle by more than ``tolerance`` (relative) on both;
   when the live bundle is a refit (it trained on the validation split, see
   :class:`training.config.RefitConfig`) only the holdout compares them. The candidate itself
   is never a refit: it keeps the validation split to stop early, calibrate and be gated on.
5. **Publish** (:func:`bundle.versions.publish`) only when accepted; the decision and its
   numbers are written as JSON and as Prometheus text (``gate.prom``) either way, and a
   rejection leaves the live bundle serving.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

import bundle as bundle_format
from bundle import versions
from bundle.manifest import Modality
from eventlog import Logged, Store, read_logged
from training.config import TrainConfig
from training.data import Dataset
from training.evaluation import SELECTION_METRIC, evaluate, list_metrics
from training.pipeline import prepare_dataset, train_dataset_to_bundle
from training.report import ranked_lists
from training.warm_start import from_bundle

log = logging.getLogger(__name__)

GATE_METRIC = SELECTION_METRIC


class GateRejected(RuntimeError):
    """The candidate failed the quality gate; the live bundle keeps serving."""


@dataclass
class RetrainData:
    dataset: Dataset  # base + logged, without the holdout
    holdout: list[tuple[str, str]]  # (user, item) external ids, logged after the live cutoff
    stats: dict[str, int] = field(default_factory=dict)


def extend(base: Dataset, logged: Logged, live_cutoff: float, holdout_share: float) -> RetrainData:
    """The base dataset with the logged users, items and interactions appended (dense ids
    continue after the base ones), minus the recent holdout."""
    user_ids, item_ids = list(base.external_user_ids()), list(base.external_item_ids())
    user_row = {u: r for r, u in enumerate(user_ids)}
    item_row = {i: r for r, i in enumerate(item_ids)}
    new_items = [i for i in logged.items if i not in item_row]
    for item_id in new_items:
        item_row[item_id] = len(item_ids)
        item_ids.append(item_id)
    known = [x for x in logged.interactions if x[1] in item_row]
    after_cutoff = [x for x in known if x[3] > live_cutoff]
    held = max(0, int(round(holdout_share * len(after_cutoff))))
    holdout = after_cutoff[len(after_cutoff) - held :] if held else []
    held_keys = {id(x) for x in holdout}
    trained = [x for x in known if id(x) not in held_keys]
    for user_id, *_ in trained:
        if user_id not in user_row:
            user_row[user_id] = len(user_ids)
            user_ids.append(user_id)
    pairs = np.array([(user_row[u], item_row[i]) for u, i, *_ in trained], np.int64).reshape(-1, 2)
    features = dict(base.features)
    if new_items and features:
        rows = np.stack([logged.items[i] for i in new_items]).astype(np.float32)
        start = 0
        for name, matrix in base.features.items():
            width = matrix.shape[1]
            features[name] = np.concatenate([matrix, rows[:, start : start + width]])
            start += width
    # logged events happened after every base row, in the order they were logged
    base_time = (base.train_time if base.train_time is not None
                 else np.arange(len(base.train), dtype=np.int64))
    start = int(base_time.max(initial=-1)) + 1
    times = np.concatenate([base_time, start + np.arange(len(pairs), dtype=np.int64)])
    train, first = np.unique(np.concatenate([base.train, pairs]), axis=0, return_index=True)
    dataset = replace(
        base,
        num_users=len(user_ids),
        num_items=len(item_ids),
        train=train,
        train_time=times[first],
        features=features,
        user_ids=user_ids,
        item_ids=item_ids,
    )
    stats = {
        "logged_interactions": len(logged.interactions),
        "dropped_unknown_item": len(logged.interactions) - len(known),
        "trained_interactions": len(trained),
        "holdout_interactions": len(holdout),
        "new_users": len(user_ids) - base.num_users,
        "new_items": len(new_items),
    }
    return RetrainData(dataset, [(u, i) for u, i, *_ in holdout], stats)


# --------------------------------------------------------------------------------------------
# Gate
# --------------------------------------------------------------------------------------------


def _rows(ids: list[str], of: dict[str, int]) -> np.ndarray:
    return np.array([of[i] for i in ids], dtype=np.int64)


def _score(
    bundle: bundle_format.Bundle, users: list[str], items: list[str],
    relevant: sp.csr_matrix, seen: sp.csr_matrix,
) -> float:
    """Recall@20 of a bundle's stored embeddings, rows ``users`` x columns ``items``, on lists
    as the service builds them: the bundle's reserved share goes to its new items."""
    user_of = {u: r for r, u in enumerate(bundle.user_ids)}
    item_of = {i: r for r, i in enumerate(bundle.item_ids)}
    user_emb = torch.as_tensor(bundle.user_embeddings[_rows(users, user_of)])
    item_emb = torch.as_tensor(bundle.item_embeddings[_rows(items, item_of)])
    new = set(bundle.new_items)
    cold = np.array([i in new for i in items], dtype=bool)
    relevant = relevant.tocsr()
    evaluated = np.flatnonzero(np.diff(relevant.indptr))
    top = ranked_lists(user_emb, item_emb, seen.tocsr(), evaluated, cold,
                       bundle.manifest.serving.new_item_slots)
    return float(list_metrics(top, relevant[evaluated], ks=(20,))[GATE_METRIC])


def _popularity(train: sp.csr_matrix, relevant: sp.csr_matrix, seen: sp.csr_matrix) -> float:
    counts = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
    order = np.argsort(-counts, kind="stable")
    scores = np.zeros_like(counts)
    scores[order] = np.linspace(1.0, 0.0, len(order), dtype=np.float32)  # strict, by count
    users = torch.ones(relevant.shape[0], 1)
    items = torch.as_tensor(scores).reshape(-1, 1)
    return float(evaluate(users, items, relevant, seen, ks=(20,))[GATE_METRIC])


def gate(
    candidate: bundle_format.Bundle,
    live: bundle_format.Bundle,
    base: Dataset,
    data: RetrainData,
    tolerance: float,
) -> dict[str, Any]:
    """The decision and every number behind it (see the module docstring)."""
    users, items = base.external_user_ids(), base.external_item_ids()
    base_seen = base.matrix("train")
    valid = {
        "candidate": _score(candidate, users, items, base.matrix("valid"), base_seen),
        "live": _score(live, users, items, base.matrix("valid"), base_seen),
        "popularity": _popularity(data.dataset.matrix("train")[:, : base.num_items],
                                  base.matrix("valid"), base_seen),
    }
    both_know = set(live.user_ids) & set(candidate.user_ids)
    base_items = set(items)
    known = [(u, i) for u, i in data.holdout if u in both_know and i in base_items]
    holdout: dict[str, Any] = {"rows": len(known)}
    if known:
        # rows: the holdout's users, in a fixed order; every known interaction masked
        hold_users = sorted({u for u, _ in known})
        row_of = {u: r for r, u in enumerate(hold_users)}
        col_of = {i: c for c, i in enumerate(items)}
        relevant = _pairs_matrix([(row_of[u], col_of[i]) for u, i in known],
                                 (len(hold_users), len(items)))
        seen_all = data.dataset.matrix("train", "valid", "test")
        cand_rows = {u: r for r, u in enumerate(data.dataset.external_user_ids())}
        seen = seen_all[[cand_rows[u] for u in hold_users]][:, : base.num_items]
        seen = seen - seen.multiply(relevant)  # never mask the target itself
        holdout["candidate"] = _score(candidate, hold_users, items, relevant, seen.tocsr())
        holdout["live"] = _score(live, hold_users, items, relevant, seen.tocsr())
    # a refit live bundle trained on the validation split: its validation number is in-sample,
    # so only the holdout compares the two (the candidate still has to beat popularity)
    live_refit = bool(live.manifest.config.get("refit"))
    valid["compared"] = not live_refit
    reasons = []
    if valid["candidate"] <= valid["popularity"]:
        reasons.append(f"valid {GATE_METRIC} {valid['candidate']:.4f} is not above the "
                       f"popularity floor {valid['popularity']:.4f}")
    for name, part in (("valid", valid), ("holdout", holdout)):
        if name == "valid" and live_refit:
            continue
        if "candidate" in part and part["candidate"] < part["live"] * (1.0 - tolerance):
            reasons.append(f"{name} {GATE_METRIC} {part['candidate']:.4f} is worse than live "
                           f"{part['live']:.4f} by more than {tolerance:.1%}")
    return {
        "accepted": not reasons,
        "reasons": reasons,
        "metric": GATE_METRIC,
        "tolerance": tolerance,
        "valid": valid,
        "holdout": holdout,
        "live_version": live.version,
        "data": data.stats,
    }


def _pairs_matrix(pairs: list[tuple[int, int]], shape: tuple[int, int]) -> sp.csr_matrix:
    array = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    data = np.ones(len(array), dtype=np.float32)
    matrix = sp.csr_matrix((data, (array[:, 0], array[:, 1])), shape=shape)
    matrix.data[:] = 1.0
    return matrix


def write_decision(decision: dict[str, Any], folder: Path) -> Path:
    """``gate.json`` (the decision) and ``gate.prom`` (the same numbers for Prometheus)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gate.json"
    path.write_text(json.dumps(decision, indent=2))
    lines = [
        "# HELP recsys_gate_accepted 1 when the last candidate passed the quality gate.",
        "# TYPE recsys_gate_accepted gauge",
        f"recsys_gate_accepted {int(decision['accepted'])}",
        "# HELP recsys_gate_recall Recall@20 of the last gate, by split and bundle.",
        "# TYPE recsys_gate_recall gauge",
    ]
    for split in ("valid", "holdout"):
        for who in ("candidate", "live", "popularity"):
            if who in decision[split]:
                lines.append(f'recsys_gate_recall{{split="{split}",bundle="{who}"}} '
                             f"{decision[split][who]:.6f}")
    lines.append(f"recsys_gate_finished_seconds {time.time():.3f}")
    (folder / "gate.prom").write_text("\n".join(lines) + "\n")
    return path


def retrain(
    root: Path,
    data: str | Path,
    config: TrainConfig,
    database_url: str,
    *,
    table_prefix: str = "",
    holdout_share: float = 0.2,
    tolerance: float = 0.02,
    keep: int = 5,
    warm_start: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, gate and (if accepted) publish; returns the decision (``published`` added)."""
    live_path = versions.current_path(root)
    if live_path is None:
        raise bundle_format.BundleError(f"{root}: nothing published yet (run bootstrap first)")
    live = bundle_format.load_bundle(live_path)
    # The nightly candidate keeps the base validation split for early stopping, calibration
    # and the gate: a refit (configs written by `select`) is what bootstrap and run.sh serve
    config = config.model_copy(update={"refit": None})
    base = prepare_dataset(data, config.model_copy(update={"cold_start_fraction": 0.0}))
    modalities = [Modality(name=n, dim=d) for n, d in zip(base.modality_names,
                                                          base.modality_dims, strict=True)]
    store = Store(database_url, table_prefix)
    try:
        logged = read_logged(store, modalities)
    finally:
        store.close()
    prepared = extend(base, logged, live.manifest.cutoff, holdout_share)
    log.info("retraining on %s", prepared.stats)
    out = root / "candidate"  # the last candidate stays for inspection until the next run
    started = time.time()
    init_model = (from_bundle(live, config.model, prepared.dataset.external_user_ids(),
                              prepared.dataset.external_item_ids()) if warm_start else None)
    result, path = train_dataset_to_bundle(prepared.dataset, out, config,
                                           data_cutoff=logged.read_at, overwrite=True,
                                           progress=progress, init_model=init_model)
    candidate = bundle_format.load_bundle(path)
    decision = gate(candidate, live, base, prepared, tolerance)
    decision["train_seconds"] = round(time.time() - started, 1)
    decision["warm_start"] = init_model is not None
    decision["epochs"] = {"run": result.epochs_run, "best": result.best_epoch}
    decision["candidate"] = str(path)
    accepted = decision["accepted"]
    decision["published"] = versions.publish(path, root, keep=keep) if accepted else None
    write_decision(decision, root / "gate")
    return decision
