"""The nightly quality gate: is the candidate fit to replace the live bundle?

Evidence the candidate cannot have shaped: Recall@20 on the fixed base validation split and on
the recent holdout (the newest logged events, trained on by neither bundle). Both bundles are
scored by the same code, from their stored embeddings, on the base catalogue, with the lists the
service builds (the reserved new-item share included): validation with training items masked,
the holdout with every known interaction masked, on the rows both bundles know.

The candidate must beat the popularity floor (MostPop from its training data) on validation and
be no worse than live by more than ``tolerance`` (relative) on both; when live is a refit (it
trained on the validation split) only the holdout compares them.

Before any of that, the day itself must look like traffic (:class:`TrafficRules`): a day of
random events moves validation by noise and leaves both bundles near zero on its own holdout,
so those numbers cannot refuse it. Three checks, each a reason in the decision file:

* **distinct users**: at least ``min_users`` users behind the events since the live cutoff (a
  day of one repeated event has one);
* **repeats**: at most ``max_repeat_share`` of those events repeat a (user, item) pair already
  known, from the base training and validation splits or an earlier logged event (a replayed
  day is all repeats);
* **signal**: on the holdout, the best of the live bundle, base popularity and the day's own
  popularity (counted on the day's trained part) reaches ``min_signal`` times the Recall@20 of a
  random list (20 / items). Real traffic agrees with at least one of them; noise with none.
  Judged only with at least ``min_signal_rows`` holdout rows, and said so otherwise.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

import bundle as bundle_format
from training.data import Dataset
from training.evaluation import SELECTION_METRIC, evaluate, list_metrics
from training.report import ranked_lists

GATE_METRIC = SELECTION_METRIC
LIST_LENGTH = 20  # the k of GATE_METRIC


@dataclass
class RetrainData:
    """What a retrain trains on and the gate judges with (:func:`training.retrain.extend`)."""

    dataset: Dataset  # base + logged, without the holdout
    holdout: list[tuple[str, str]]  # (user, item) external ids, logged after the live cutoff
    stats: dict[str, Any] = field(default_factory=dict)
    # (user, item) logged after the live cutoff and trained on: the day's own popularity
    recent_trained: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class TrafficRules:
    """What the events since the live cutoff must show to count as traffic."""

    min_users: int = 5
    max_repeat_share: float = 0.5
    min_signal: float = 3.0
    min_signal_rows: int = 20


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
    return float(list_metrics(top, relevant[evaluated], ks=(LIST_LENGTH,))[GATE_METRIC])


def _popularity(counts: np.ndarray, relevant: sp.csr_matrix, seen: sp.csr_matrix) -> float:
    """Recall@20 of one list for everyone: the items by ``counts`` [items], ties by id."""
    order = np.argsort(-counts.astype(np.float32), kind="stable")
    scores = np.zeros(len(counts), dtype=np.float32)
    scores[order] = np.linspace(1.0, 0.0, len(order), dtype=np.float32)  # strict, by count
    users = torch.ones(relevant.shape[0], 1)
    items = torch.as_tensor(scores).reshape(-1, 1)
    return float(evaluate(users, items, relevant, seen, ks=(LIST_LENGTH,))[GATE_METRIC])


def _item_counts(matrix: sp.spmatrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=0)).ravel()


def traffic_check(data: RetrainData, holdout: dict[str, Any], num_items: int,
                  rules: TrafficRules) -> tuple[dict[str, Any], list[str]]:
    """The numbers of the three checks (module docstring) and a reason for each that fails."""
    recent = data.stats.get("recent_interactions", 0)
    users = data.stats.get("recent_users", 0)
    repeats = data.stats.get("recent_repeat_share", 0.0)
    numbers: dict[str, Any] = {"events": recent, "users": users, "repeat_share": repeats,
                               "rules": asdict(rules)}
    reasons = []
    if recent == 0:
        return numbers, reasons  # nothing new: the usual comparisons decide
    if users < rules.min_users:
        reasons.append(f"the {recent} events since the live cutoff come from {users} distinct "
                       f"user(s), fewer than {rules.min_users}: not traffic")
    if repeats > rules.max_repeat_share:
        reasons.append(f"{repeats:.0%} of the events since the live cutoff repeat a known "
                       f"(user, item) pair, more than {rules.max_repeat_share:.0%}: a replayed "
                       "or duplicated day")
    chance = LIST_LENGTH / max(num_items, 1)
    if holdout.get("rows", 0) >= rules.min_signal_rows:
        best = max(holdout["live"], holdout["popularity"], holdout["day_popularity"])
        numbers["signal"] = round(best / chance, 2)
        if best < rules.min_signal * chance:
            reasons.append(f"the holdout looks like noise: the best of live, popularity and the "
                           f"day's popularity reaches {GATE_METRIC} {best:.4f}, "
                           f"{best / chance:.1f}x a random list's {chance:.4f} (needs "
                           f"{rules.min_signal:g}x)")
    else:
        numbers["signal"] = None  # too few rows to tell noise from traffic
    return numbers, reasons


def gate(
    candidate: bundle_format.Bundle,
    live: bundle_format.Bundle,
    base: Dataset,
    data: RetrainData,
    tolerance: float,
    rules: TrafficRules | None = None,
) -> dict[str, Any]:
    """The decision and every number behind it (see the module docstring)."""
    rules = rules or TrafficRules()
    users, items = base.external_user_ids(), base.external_item_ids()
    base_seen = base.matrix("train")
    valid = {
        "candidate": _score(candidate, users, items, base.matrix("valid"), base_seen),
        "live": _score(live, users, items, base.matrix("valid"), base_seen),
        "popularity": _popularity(
            _item_counts(data.dataset.matrix("train")[:, : base.num_items]),
            base.matrix("valid"), base_seen),
    }
    both_know = set(live.user_ids) & set(candidate.user_ids)
    base_items = set(items)
    known = [(u, i) for u, i in data.holdout if u in both_know and i in base_items]
    holdout: dict[str, Any] = {"rows": len(known)}
    col_of = {i: c for c, i in enumerate(items)}
    if known:
        # rows: the holdout's users, in a fixed order; every known interaction masked
        hold_users = sorted({u for u, _ in known})
        row_of = {u: r for r, u in enumerate(hold_users)}
        relevant = _pairs_matrix([(row_of[u], col_of[i]) for u, i in known],
                                 (len(hold_users), len(items)))
        seen_all = data.dataset.matrix("train", "valid", "test")
        cand_rows = {u: r for r, u in enumerate(data.dataset.external_user_ids())}
        seen = seen_all[[cand_rows[u] for u in hold_users]][:, : base.num_items]
        seen = (seen - seen.multiply(relevant)).tocsr()  # never mask the target itself
        holdout["candidate"] = _score(candidate, hold_users, items, relevant, seen)
        holdout["live"] = _score(live, hold_users, items, relevant, seen)
        holdout["popularity"] = _popularity(_item_counts(base.matrix("train")), relevant, seen)
        day = np.zeros(len(items))
        for _, item in data.recent_trained:
            if item in col_of:
                day[col_of[item]] += 1
        holdout["day_popularity"] = _popularity(day, relevant, seen)
    # a refit live bundle trained on the validation split: its validation number is in-sample,
    # so only the holdout compares the two (the candidate still has to beat popularity)
    live_refit = bool(live.manifest.config.get("refit"))
    valid["compared"] = not live_refit
    traffic, reasons = traffic_check(data, holdout, len(items), rules)
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
        "traffic": traffic,
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
    tmp = folder / f".gate.json.{time.monotonic_ns()}"
    tmp.write_text(json.dumps(decision, indent=2))
    tmp.replace(path)  # a reader never sees half a decision
    lines = [
        "# HELP recsys_gate_accepted 1 when the last candidate passed the quality gate.",
        "# TYPE recsys_gate_accepted gauge",
        f"recsys_gate_accepted {int(decision['accepted'])}",
        "# HELP recsys_gate_recall Recall@20 of the last gate, by split and bundle.",
        "# TYPE recsys_gate_recall gauge",
    ]
    for split in ("valid", "holdout"):
        for who in ("candidate", "live", "popularity", "day_popularity"):
            if who in decision[split]:
                lines.append(f'recsys_gate_recall{{split="{split}",bundle="{who}"}} '
                             f"{decision[split][who]:.6f}")
    lines.append(f"recsys_gate_finished_seconds {time.time():.3f}")
    (folder / "gate.prom").write_text("\n".join(lines) + "\n")
    return path
