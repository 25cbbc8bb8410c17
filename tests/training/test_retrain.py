"""Nightly retraining on a small real TikTok sample: logged data in, gate, publish or reject."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import bundle as bf
from bundle import versions
from bundle.testing import make_bundle
from eventlog.store import Store, StoredItem
from training.cli import app
from training.retrain import _score

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
    store.add_interaction("new-user", "new-1", 0.0)  # early: trained on, not held out
    store.add_interaction("new-user", "3", 1.0)
    store.add_interaction("0", "ghost", 2.0)
    rng = np.random.default_rng(0)
    users, trend = rng.choice(1500, 150, replace=False), rng.choice(2000, 30, replace=False)
    for round_ in range(10):
        for user in users:
            store.add_interaction(str(user), str(rng.choice(trend)), 3.0 + round_)
    store.close()


@dataclass
class Day:
    """One bootstrap, a day of logged traffic, then retrains; what each left behind."""

    root: Path
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

    retrain = ["retrain", *common, "--database-url", url, "--holdout-share", "0.3"]
    result = runner.invoke(app, [*retrain, "--config", _config(tmp_path, "g", GOOD),
                                 "--tolerance", "0.5"])
    assert result.exit_code == 0, result.output
    published = json.loads((root / "gate" / "gate.json").read_text())
    published_prom = (root / "gate" / "gate.prom").read_text()
    # from scratch: a warm start from live would leave the barely-trained candidate near live
    result = runner.invoke(app, [*retrain, "--config", _config(tmp_path, "w", WORSE),
                                 "--no-warm-start"])
    return Day(root, live, again, published, published_prom,
               json.loads((root / "gate" / "gate.json").read_text()),
               (root / "gate" / "gate.prom").read_text(), result.output, result.exit_code,
               versions.current_version(root))


def test_bootstrap_does_nothing_when_a_bundle_is_published(day: Day) -> None:
    assert day.bootstrap_again.endswith("nothing to do\n")


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
    result = runner.invoke(app, ["retrain", *common, "--database-url", url, "--config", refit,
                                 "--holdout-share", "0.3", "--no-warm-start"])
    decision = json.loads((root / "gate" / "gate.json").read_text())
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
