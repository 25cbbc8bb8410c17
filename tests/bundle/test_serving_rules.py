"""Reserved new-item slots: the rule the reports score and the service applies."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.serving_rules import check_share, interleave_new_items, reserved_slots

NEW = {f"n{i}" for i in range(30)}


def merge(ranked, new_ranked, share, length):
    return interleave_new_items(ranked, new_ranked, share, length, is_new=NEW.__contains__)


def test_reserved_slots_floor_the_share_of_a_prefix():
    assert [reserved_slots(0.1, p) for p in (1, 9, 10, 19, 20, 50)] == [0, 0, 1, 1, 2, 5]
    assert reserved_slots(0.05, 20) == 1 and reserved_slots(0.05, 19) == 0
    assert reserved_slots(0.0, 100) == 0
    with pytest.raises(ValueError):
        check_share(1.0)


def test_no_share_is_the_plain_ranking():
    ranked = [f"w{i}" for i in range(30)]
    assert merge(ranked, ["n0", "n1"], 0.0, 20) == ranked[:20]


def test_reserved_new_items_close_each_block_in_their_own_order():
    warm = [f"w{i}" for i in range(30)]
    out = merge(warm, ["n3", "n1", "n2"], 0.1, 20)
    assert out[9] == "n3" and out[19] == "n1"
    assert [e for e in out if e.startswith("w")] == warm[:18]


def test_a_new_item_that_ranks_high_on_its_own_keeps_its_place_and_counts():
    ranked = ["n1"] + [f"w{i}" for i in range(30)]
    out = merge(ranked, ["n1", "n2", "n3"], 0.1, 20)
    assert out[0] == "n1"  # the first block's quota is met already
    assert out[9] == "w8" and out[19] == "n2"  # the second one takes the next new item
    assert len(set(out)) == 20


def test_too_few_new_items_leave_the_rest_to_warm_ones():
    warm = [f"w{i}" for i in range(30)]
    out = merge(warm, ["n0"], 0.2, 20)
    assert out[4] == "n0" and sum(e in NEW for e in out) == 1 and len(out) == 20


def test_every_prefix_meets_the_quota_and_cuts_give_the_same_list():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pool = [f"w{i}" for i in range(40)] + sorted(NEW)
        scores = dict(zip(pool, rng.normal(size=len(pool)), strict=True))
        ranked = sorted(pool, key=lambda e: -scores[e])
        new_ranked = [e for e in ranked if e in NEW]
        share = float(rng.choice([0.05, 0.1, 0.15, 0.3]))
        full = merge(ranked, new_ranked, share, 50)
        assert len(set(full)) == 50
        for p in range(1, 51):
            assert sum(e in NEW for e in full[:p]) >= reserved_slots(share, p)
            assert merge(ranked, new_ranked, share, p) == full[:p]
        # warm items keep their relative order
        assert [e for e in full if e not in NEW] == [e for e in ranked if e not in NEW][
            : sum(e not in NEW for e in full)
        ]
