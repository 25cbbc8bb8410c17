"""Nightly retraining: base data + what the service logged -> candidate -> quality gate -> publish.

``python -m training retrain`` runs :func:`retrain`, one run per bundles root at a time
(:mod:`training.retrain_lock`: a second run, by hand or scheduled, exits ``LOCKED_EXIT`` and
does nothing):

0. **Clean up.** What earlier runs left under the root is removed: their candidate folders (a
   rejected candidate stays for inspection until the next run; a published one is removed
   once its verified copy is live), staging folders of killed writes, the publish's staging
   folders. Each run trains into its own ``<root>/candidates/<run>``.
1. **Data.** The base dataset (the files) plus every item and interaction in the service's
   store (the store holds only what arrived online, never the base data). Interactions with
   an item that is neither in the base catalog nor stored are dropped and counted.
2. **Recent holdout.** The newest ``holdout_share`` of the interactions logged after the live
   bundle's data cutoff are kept out of training: neither the live bundle nor the candidate has
   seen them, so they score both fairly on what users did most recently.
3. **Candidate.** Trained with the configuration, warm-started from the live bundle's weights
   when it is the same model (:mod:`training.warm_start`: ID-table rows matched by external
   id, new rows freshly initialised; ``warm_start=False`` trains from scratch, and so does a
   run whose live bundle is a refit, whose weights saw the validation split). The candidate
   is never a refit: it keeps the validation split to stop early, calibrate and be gated on.
4. **Gate** (:mod:`training.gate`): the day must look like traffic, and the candidate must beat
   popularity and be no worse than live on validation and the holdout.
5. **Publish** (:func:`bundle.versions.publish`) only when accepted; the decision and its
   numbers are written as JSON and as Prometheus text (``gate.prom``) either way, a line is
   appended to ``<root>/runs.jsonl``, and a rejection leaves the live bundle serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import bundle as bundle_format
from bundle import history, versions
from bundle.manifest import Modality
from eventlog import Logged, Store, online_hit_rates, read_logged
from training.config import TrainConfig
from training.data import Dataset
from training.gate import RetrainData, TrafficRules, gate, write_decision
from training.pipeline import prepare_dataset, train_dataset_to_bundle
from training.retrain_lock import exclusive_run
from training.warm_start import from_bundle

log = logging.getLogger(__name__)

CANDIDATES = "candidates"
RUNS = "runs.jsonl"


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
    recent_keys = {id(x) for x in after_cutoff}
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
        "recent_interactions": len(after_cutoff),
        "recent_users": len({x[0] for x in after_cutoff}),
        "recent_repeat_share": _repeat_share(base, known, recent_keys),
    }
    recent_trained = [(x[0], x[1]) for x in trained if id(x) in recent_keys]
    return RetrainData(dataset, [(u, i) for u, i, *_ in holdout], stats, recent_trained)


def _repeat_share(base: Dataset, known: list[tuple], recent: set[int]) -> float:
    """The share of the recent events (``id`` in ``recent``) whose (user, item) pair was known
    before them: in the base data the bundles train on (training and validation splits) or in
    an earlier logged event (``known`` is in log order). The base test split is not "known":
    it stands for what users did after the data was cut, as a day of traffic may repeat."""
    if not recent:
        return 0.0
    users, items = base.external_user_ids(), base.external_item_ids()
    pairs = np.concatenate([base.split(s) for s in ("train", "valid")])
    earlier = {(users[u], items[i]) for u, i in pairs.tolist()}
    repeats = 0
    for event in known:
        pair = (event[0], event[1])
        if id(event) in recent and pair in earlier:
            repeats += 1
        earlier.add(pair)
    return round(repeats / len(recent), 4)


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
    rules: TrafficRules | None = None,
    track: bool = False,
) -> dict[str, Any]:
    """Train, gate and (if accepted) publish under the retrain lock (``RetrainLocked`` if
    another run holds it); returns the decision (``published`` added). ``track``: the
    candidate's run and the gate's decision go to MLflow (:mod:`training.tracking`; without
    MLFLOW_TRACKING_URI, the file store ``<root>/mlruns``)."""
    with exclusive_run(database_url, root), _run_record(root, "retrain") as record:
        clean_candidates(root)
        decision = _retrain(root, data, config, database_url, table_prefix, holdout_share,
                            tolerance, keep, warm_start, progress, rules, record["run"],
                            track=track)
        record.update(result="published" if decision["accepted"] else "rejected",
                      published=decision["published"], candidate=decision["candidate"])
        return decision


def bootstrap(root: Path, data: str | Path, config: TrainConfig, database_url: str,
              progress: bool = True, track: bool = False) -> str | None:
    """Train and publish a first version when nothing is published yet, under the retrain
    lock; returns the version, or None when one was already published. The candidate folder
    is removed once published (the version is a verified copy of it)."""
    from training.pipeline import train_to_bundle

    with exclusive_run(database_url, root), _run_record(root, "bootstrap") as record:
        if versions.current_version(root) is not None:
            record["result"] = "nothing to do"
            return None
        clean_candidates(root)
        _, path = train_to_bundle(data, root / CANDIDATES / record["run"], config,
                                  overwrite=True, progress=progress,
                                  track=track and root / "mlruns", tags={"command": "bootstrap"})
        name = versions.publish(path, root, reason="bootstrap")
        shutil.rmtree(path, ignore_errors=True)
        record.update(result="published", published=name)
        return name


def _retrain(root: Path, data: str | Path, config: TrainConfig, database_url: str,
             table_prefix: str, holdout_share: float, tolerance: float, keep: int,
             warm_start: bool, progress: bool, rules: TrafficRules | None,
             run: str, *, track: bool = False) -> dict[str, Any]:
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
        # the live version's online evaluation since its data cut-off: reported, not gated
        online = online_hit_rates(store, live.manifest.cutoff, version=live.version)
    finally:
        store.close()
    prepared = extend(base, logged, live.manifest.cutoff, holdout_share)
    log.info("retraining on %s", prepared.stats)
    started = time.time()
    # a refit live bundle trained on the validation split: started from its weights, the
    # candidate would stop early and be gated on a split its weights have seen
    live_refit = bool(live.manifest.config.get("refit"))
    if warm_start and live_refit:
        log.info("live is a refit (its weights saw the validation split): training from scratch")
    init_model = (from_bundle(live, config.model, prepared.dataset.external_user_ids(),
                              prepared.dataset.external_item_ids())
                  if warm_start and not live_refit else None)
    result, path = train_dataset_to_bundle(prepared.dataset, root / CANDIDATES / run, config,
                                           data_cutoff=logged.read_at, overwrite=True,
                                           progress=progress, init_model=init_model,
                                           track=track and root / "mlruns",
                                           tags={"command": "retrain", "retrain_run": run})
    candidate = bundle_format.load_bundle(path)
    decision = gate(candidate, live, base, prepared, tolerance, rules)
    decision["run"] = run
    decision["online"] = online
    decision["train_seconds"] = round(time.time() - started, 1)
    decision["warm_start"] = init_model is not None
    decision["epochs"] = {"run": result.epochs_run, "best": result.best_epoch}
    decision["candidate"] = str(path)
    decision["published"] = None
    if decision["accepted"]:
        decision["published"] = versions.publish(path, root, keep=keep, reason=f"retrain {run}")
        # the version is a verified copy: point at it and drop the candidate's disk
        decision["candidate"] = str(root / versions.VERSIONS / decision["published"])
        shutil.rmtree(path, ignore_errors=True)
    decision_file = write_decision(decision, root / "gate")
    if track:  # the decision joins the candidate's MLflow run
        from training.tracking import log_decision

        log_decision(result.tracking_run, decision, decision_file, root / "mlruns")
    return decision


def clean_candidates(root: Path) -> list[Path]:
    """Remove what earlier runs left (call under the retrain lock): their candidate folders (a
    rejected one stays for inspection until the next run), staging folders of killed writes,
    and the publish's leftovers. Returns what was removed."""
    removed = []
    folder = root / CANDIDATES
    stale = list(folder.iterdir()) if folder.is_dir() else []
    stale += [root / "candidate", *root.glob(".candidate.staging-*")]  # the layout before runs
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if (root / versions.VERSIONS).is_dir():
        with history.publish_lock(root):
            removed += versions.clean_leftovers(root)
    if removed:
        log.info("removed %d leftovers of earlier runs: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


@contextlib.contextmanager
def _run_record(root: Path, command: str) -> Iterator[dict[str, Any]]:
    """Appends one line per run to ``<root>/runs.jsonl``: what ran, when, and how it ended
    (``failed`` with the error, ``stopped`` on SIGTERM or Ctrl-C)."""
    now = time.time()
    stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}.{int(now % 1 * 1e6):06d}Z"
    record: dict[str, Any] = {"run": f"{stamp}-{os.getpid()}", "command": command,
                              "pid": os.getpid(), "started": time.time()}
    try:
        yield record
    except (KeyboardInterrupt, SystemExit):
        record["result"] = "stopped"
        raise
    except Exception as error:
        record.update(result="failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        record["finished"] = time.time()
        root.mkdir(parents=True, exist_ok=True)
        with (root / RUNS).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
