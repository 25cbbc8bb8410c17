"""One ranking pass scores every serving rule exactly as a full ranking of each would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bundle.serving_rules import interleave_new_items
from training.config import TrainConfig
from training.pipeline import prepare_dataset
from training.report import warm_cold_report
from training.sweep import Rule, merge_lists, score_rules
from training.trainer import embeddings, train


def test_merged_lists_are_the_served_interleaving() -> None:
    rng = np.random.default_rng(0)
    warm_scores = -np.sort(-rng.normal(size=(30, 8)), axis=1)
    new_scores = -np.sort(-rng.normal(size=(30, 8)), axis=1)
    new_scores[:5, 4:] = -np.inf  # fewer new items than places for some users
    warm_ids = np.tile(np.arange(8), (30, 1))
    new_ids = np.where(new_scores > -np.inf, np.tile(np.arange(100, 108), (30, 1)), -1)
    scales, shares = np.array([1.0, 0.3, 2.0]), np.array([0.0, 0.1, 0.25])
    lists = merge_lists(warm_ids, warm_scores, new_ids, new_scores, scales, shares, 10)
    for r, (scale, share) in enumerate(zip(scales, shares, strict=True)):
        for row in range(30):
            pool = [(s, i) for s, i in zip(warm_scores[row], warm_ids[row], strict=True)]
            pool += [(scale * s, i) for s, i in zip(new_scores[row], new_ids[row], strict=True)
                     if i >= 0]
            ranked = [i for _, i in sorted(pool, key=lambda p: (-p[0], p[1]))]
            new_ranked = [i for i in new_ids[row] if i >= 0]
            expected = interleave_new_items(ranked, new_ranked, share, 10,
                                            is_new=lambda i: i >= 100)
            assert lists[r, row, : len(expected)].tolist() == expected


@pytest.mark.parametrize("slots", [0.0, 0.1])
def test_every_rule_gets_the_report_of_a_full_ranking(toy_dataset_dir: Path, slots: float):
    config = TrainConfig(model="early_lightgcn", max_epochs=2, cold_start_fraction=0.2, seed=3,
                         hparams={"embed_dim": 16, "content_dim": 8, "knn_weight": 1.0,
                                  "item_graph_k": 3})
    dataset = prepare_dataset(toy_dataset_dir, config)
    model = train(dataset, config, progress=False).model
    rules = [Rule(cold_scale=s, slot_share=slots + extra, knn_scale=f, fused_weight=w)
             for s in (None, 0.5, 3.0) for extra in (0.0, 0.1) for f in (None, 4.0)
             for w in (None, 0.0)]
    for split in ("valid", "test"):
        reports = score_rules(model, dataset, split, rules, batch_size=7)
        for rule, got in zip(rules, reports, strict=True):
            saved = {n: float(getattr(model, n)) for n in ("cold_scale", "knn_scale",
                                                         "new_item_fused_weight")}
            for name, value in (("cold_scale", rule.cold_scale), ("knn_scale", rule.knn_scale),
                                ("new_item_fused_weight", rule.fused_weight)):
                if value is not None:
                    getattr(model, name).fill_(value)
            expected = warm_cold_report(*embeddings(model), dataset, split,
                                        slot_share=rule.slot_share)
            for name, value in saved.items():
                getattr(model, name).fill_(value)
            assert set(got) == set(expected)
            assert got["rows"] == expected["rows"]
            assert got["cold_share@20"] == pytest.approx(expected["cold_share@20"])
            for part in ("all", "warm", "cold", "cold_among_cold"):
                assert got[part] == pytest.approx(expected[part]), (rule, part)
