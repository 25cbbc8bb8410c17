"""Nightly retraining on a small real TikTok sample: logged data in, gate, publish or reject."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import bundle as bf
from bundle import history as bf_history
from bundle import versions
from bundle.testing import make_bundle
from eventlog.served import ServedList, add_served
from eventlog.store import Store, StoredItem
from training.cli import app
from training.gate import _score

runner = CliRunner()
pytestmark = pytest.mark.slow  # over 5 s a test: left out of the quick loop (-m "not slow")

GOOD = {"model": "lightgcn", "lr": 0.005, "l2": 1e-6, "l2_scope": "all", "max_epochs": 30,
        "patience": 5}
WORSE = {**GOOD, "lr": 1e-6, "max_epochs": 1}  # barely moves from the initialisation


def _config(tmp_path: Path, name: str, fields: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(fields))
    return str(path)


def _log_online_events(url: str, sample: Path, version: str) -> None:
    """What a day of traffic leaves in the store: a new item, a new user, an event on an item
    nobody knows, and a trend: 150 known users keep watching the same 30 items, so a model
    trained on the day predicts the day's last events and the live one cannot."""
    store = Store(url)
    store.create()
    features = np.concatenate([np.load(sample / f"{m}_feat.npy")[7] for m in ("audio", "image")])
    store.upsert_items([StoredItem("new-1", features.astype(np.float32), "audio:128,image:128",
                                   None, None, version)])
    # a list the live version served to new-user: both of its next events hit it
    add_served(store, [ServedList("new-user", version, time.time(), ("3", "new-1", "9"), "wnw")])
    time.sleep(0.01)
    store.add_interaction("new-user", "new-1", 0.0)  # early: trained on, not held out
    store.add_interaction("new-user", "3", 1.0)
    store.add_interaction("0", "ghost", 2.0)
    _log_trend(store)
    store.close()


def _log_trend(store: Store) -> None:
    """The trend of :func:`_log_online_events` alone, the very same events (same seed)."""
    rng = np.random.default_rng(0)
    users, trend = rng.choice(1500, 150, replace=False), rng.choice(2000, 30, replace=False)
    for round_ in range(10):
        for user in users:
            store.add_interaction(str(user), str(rng.choice(trend)), 3.0 + round_)


@dataclass
class Day:
    """One bootstrap, a day of logged traffic, then retrains; what each left behind."""

    root: Path
    store: Path  # the store's SQLite file: the day's events
    live: str  # the bootstrap's version
    bootstrap_again: str  # the output of a second bootstrap
    published: dict[str, Any]  # gate.json of the retrain that passed
    published_prom: str
    rejected: dict[str, Any]  # gate.json of the retrain that failed
    rejected_prom: str
    rejected_output: str
    rejected_exit: int
    serving_after_reject: str


@pytest.fixture(scope="module")
def day(tiktok_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Day:
    tmp_path = tmp_path_factory.mktemp("retrain")
    root, url = tmp_path / "bundles", f"sqlite:///{tmp_path / 'store.db'}"
    common = ["--root", str(root), "--data", str(tiktok_sample), "--quiet"]
    result = runner.invoke(app, ["bootstrap", *common, "--config", _config(tmp_path, "g", GOOD)])
    assert result.exit_code == 0, result.output
    live = versions.current_version(root)
    again = runner.invoke(app, ["bootstrap", *common]).output
    _log_online_events(url, tiktok_sample, live)
    (root / "candidates" / "left-by-a-kill").mkdir(parents=True)  # what a killed run leaves
    (root / "versions" / ".staging-killed").mkdir()

    retrain = ["retrain", *common, "--database-url", url, "--holdout-share", "0.3"]
    result = runner.invoke(app, [*retrain, "--config", _config(tmp_path, "g", GOOD),
                                 "--tolerance", "0.5"])
    assert result.exit_code == 0, result.output
    published = json.loads((root / "gate" / "gate.json").read_text())
    published_prom = (root / "gate" / "gate.prom").read_text()
    # from scratch: a warm start from live would leave the barely-trained candidate near live
    result = runner.invoke(app, [*retrain, "--config", _config(tmp_path, "w", WORSE),
                                 "--no-warm-start"])
    return Day(root, tmp_path / "store.db", live, again, published, published_prom,
               json.loads((root / "gate" / "gate.json").read_text()),
               (root / "gate" / "gate.prom").read_text(), result.output, result.exit_code,
               versions.current_version(root))


def test_bootstrap_does_nothing_when_a_bundle_is_published(day: Day) -> None:
    assert day.bootstrap_again.endswith("nothing to do\n")


def test_runs_leave_one_candidate_a_run_record_each_and_no_leftovers(day: Day) -> None:
    """Each run trains into its own folder; a published candidate is removed once live, and
    the next run removes a rejected one and what killed runs and publishes left."""
    assert [p.name for p in (day.root / "candidates").iterdir()] == [
        Path(day.rejected["candidate"]).name]
    assert not list((day.root / "versions").glob(".staging-*"))
    assert Path(day.published["candidate"]).parent.name == "versions"  # the live copy
    runs = [json.loads(line) for line in (day.root / "runs.jsonl").read_text().splitlines()]
    assert [(r["command"], r["result"]) for r in runs] == [
        ("bootstrap", "published"), ("retrain", "published"), ("retrain", "rejected")]
    assert all(r["finished"] >= r["started"] for r in runs)
    moves = bf_history.read_history(day.root)
    assert [m.action for m in moves] == ["publish", "publish"]
    assert moves[0].reason == "bootstrap" and moves[1].reason.startswith("retrain ")


def test_a_second_retrain_while_one_holds_the_lock_does_nothing_and_exits_3(
    day: Day, tmp_path: Path
) -> None:
    from training.retrain_lock import run_lock

    before = (day.root / "runs.jsonl").read_text()
    with run_lock("sqlite:///unused.db", day.root) as held:
        assert held
        result = runner.invoke(app, ["retrain", "--root", str(day.root), "--data", "unused",
                                     "--database-url", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 3 and "another retrain or bootstrap" in result.output
    assert f"pid {os.getpid()}" in result.output  # who holds it
    assert (day.root / "runs.jsonl").read_text() == before


def test_a_candidate_that_passes_is_published_as_the_new_current(day: Day) -> None:
    decision = day.published
    assert decision["accepted"] and decision["published"] not in (None, day.live)
    assert decision["warm_start"]  # the same model as live: started from its weights


def test_the_candidate_learns_the_logged_day(day: Day) -> None:
    decision = day.published
    assert decision["data"]["new_items"] == 1 and decision["data"]["dropped_unknown_item"] == 1
    assert decision["data"]["holdout_interactions"] == round(0.3 * 1502)
    assert decision["holdout"]["candidate"] > 2 * decision["holdout"]["live"]
    assert decision["valid"]["candidate"] > decision["valid"]["popularity"]


def test_the_decision_reports_the_live_versions_online_hit_rate(day: Day) -> None:
    [row] = day.published["online"]  # one day, the live version only
    assert row["model_version"] == day.live
    assert (row["lists"], row["interactions"], row["hits"], row["new_hits"],
            row["warm_hits"]) == (1, 2, 2, 1, 1)


def test_the_published_bundle_holds_the_logged_items_and_users(day: Day) -> None:
    published = bf.load_bundle(day.root / "versions" / day.published["published"])
    assert "new-1" in published.item_ids and "new-user" in published.user_ids
    live = bf.load_bundle(day.root / "versions" / day.live)
    assert published.manifest.data_cutoff > live.manifest.cutoff


def test_the_gate_writes_its_metrics_for_a_textfile_collector(day: Day) -> None:
    assert "recsys_gate_accepted 1" in day.published_prom
    assert 'split="holdout",bundle="live"' in day.published_prom
    assert "recsys_gate_accepted 0" in day.rejected_prom


def test_a_candidate_that_fails_is_rejected_and_live_keeps_serving(day: Day) -> None:
    assert day.rejected_exit == 1 and "rejected" in day.rejected_output
    decision = day.rejected
    assert not decision["accepted"] and decision["published"] is None and decision["reasons"]
    assert day.serving_after_reject == day.published["published"]


def test_a_refit_live_bundle_is_judged_on_the_holdout_and_the_candidate_never_refits(
    tiktok_sample: Path, tmp_path: Path
) -> None:
    """A refit trained on the validation split: its validation number is in-sample."""
    root, url = tmp_path / "bundles", f"sqlite:///{tmp_path / 'store.db'}"
    common = ["--root", str(root), "--data", str(tiktok_sample), "--quiet"]
    refit = _config(tmp_path, "r", {**GOOD, "max_epochs": 5, "refit": {"epochs": 5}})
    assert runner.invoke(app, ["bootstrap", *common, "--config", refit]).exit_code == 0
    live = versions.current_version(root)
    assert bf.load_bundle(root / versions.CURRENT).manifest.config["refit"]["epochs"] == 5
    _log_online_events(url, tiktok_sample, live)
    # asked to warm-start (the default), it trains from scratch: the refit's weights saw the
    # validation split the candidate stops early and is gated on
    result = runner.invoke(app, ["retrain", *common, "--database-url", url, "--config", refit,
                                 "--holdout-share", "0.3"])
    decision = json.loads((root / "gate" / "gate.json").read_text())
    assert decision["warm_start"] is False
    assert decision["valid"]["compared"] is False
    assert not any(reason.startswith("valid recall@20") and "worse than live" in reason
                   for reason in decision["reasons"])
    assert decision["holdout"]["rows"] > 0
    candidate = bf.load_bundle(Path(decision["candidate"]))
    assert candidate.manifest.config["refit"] is None  # stopped early on validation
    assert result.exit_code == (0 if decision["accepted"] else 1)


def test_the_gate_scores_lists_as_served_with_the_reserved_share(tmp_path: Path) -> None:
    """A bundle whose new items never reach the top 20 on their scores: with a reserved share
    the gate's lists hold them (as the service's do), so a relevant new item counts."""
    new = [f"i{n}" for n in range(190, 200)]
    plain = bf.load_bundle(make_bundle(tmp_path / "plain", new_items=new).path)
    slots = bf.load_bundle(make_bundle(tmp_path / "slots", new_items=new,
                                       new_item_slots=0.5).path)
    users, items = list(plain.user_ids), list(plain.item_ids)
    scores = plain.user_embeddings @ plain.item_embeddings.T
    # each user's relevant item: the new item it scores lowest, far from any plain top 20
    lowest = [190 + int(np.argmin(row[190:])) for row in scores]
    relevant = sp.csr_matrix((np.ones(len(users)), (np.arange(len(users)), lowest)),
                             shape=(len(users), len(items)))
    seen = sp.csr_matrix((len(users), len(items)))
    assert _score(plain, users, items, relevant, seen) == 0.0
    assert _score(slots, users, items, relevant, seen) == 1.0  # 10 slots hold all 10 new items


def _bad_day(day: Day, sample: Path, tmp_path: Path, log: Callable[[Store], None],
             keep_the_day: bool = False) -> dict:
    """A copy of the day's root (live: the published candidate) and a store holding ``log``'s
    events (after the day's, with ``keep_the_day``); one retrain that would pass on numbers
    alone (tolerance 0.5)."""
    root, url = tmp_path / "bundles", f"sqlite:///{tmp_path / 'store.db'}"
    shutil.copytree(day.root, root, symlinks=True)
    if keep_the_day:
        shutil.copy(day.store, tmp_path / "store.db")
    store = Store(url)
    store.create()
    log(store)
    store.close()
    result = runner.invoke(app, ["retrain", "--root", str(root), "--data", str(sample),
                                 "--quiet", "--database-url", url, "--holdout-share", "0.3",
                                 "--config", _config(tmp_path, "g", {**GOOD, "max_epochs": 3}),
                                 "--tolerance", "0.5"])
    decision = json.loads((root / "gate" / "gate.json").read_text())
    assert result.exit_code == 1 and not decision["accepted"], result.output
    assert versions.current_version(root) == day.published["published"]  # live keeps serving
    return decision


def test_the_real_day_looks_like_traffic(day: Day) -> None:
    traffic = day.published["traffic"]
    assert traffic["users"] >= 150 and traffic["repeat_share"] < 0.5
    assert traffic["signal"] >= 3.0  # the day's own popularity predicts its newest events


def test_a_day_of_random_events_is_refused_as_noise(
    day: Day, tiktok_sample: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)

    def noise(store: Store) -> None:
        for user, item in zip(rng.integers(0, 1500, 1500), rng.integers(0, 2000, 1500),
                              strict=True):
            store.add_interaction(str(user), str(item))

    decision = _bad_day(day, tiktok_sample, tmp_path, noise)
    assert any("looks like noise" in reason for reason in decision["reasons"]), decision
    assert decision["traffic"]["signal"] < 3.0


def test_a_day_of_one_repeated_event_is_refused(
    day: Day, tiktok_sample: Path, tmp_path: Path
) -> None:
    def repeated(store: Store) -> None:
        for _ in range(300):
            store.add_interaction("17", "42")

    decision = _bad_day(day, tiktok_sample, tmp_path, repeated)
    reasons = " ".join(decision["reasons"])
    assert "1 distinct user(s)" in reasons and "repeat a known (user, item) pair" in reasons


def test_a_replayed_day_is_refused_as_duplicates(
    day: Day, tiktok_sample: Path, tmp_path: Path
) -> None:
    """The published candidate trained on the trend day; the same events logged again."""
    decision = _bad_day(day, tiktok_sample, tmp_path, _log_trend, keep_the_day=True)
    assert decision["traffic"]["repeat_share"] > 0.9
    assert any("replayed or duplicated day" in reason for reason in decision["reasons"])
