"""All-item ranking evaluation: metrics checked against rankings computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from training.evaluation import evaluate, rank_metrics, top_k_items

# 1 / log2(rank + 1): the DCG discount of ranks 1..4.
D1 = 1.0  # 1 / log2(2)
D2 = 1.0 / math.log2(3)  # ~0.630930
D3 = 1.0 / math.log2(4)  # 0.5
D4 = 1.0 / math.log2(5)  # ~0.430677


def _csr(rows: list[list[int]], num_items: int) -> sp.csr_matrix:
    """Binary [len(rows), num_items] matrix with ones at the listed item ids of each row."""
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), num_items))


# --------------------------------------------------------------------------------------------
# rank_metrics
# --------------------------------------------------------------------------------------------


def test_rank_metrics_hand_computed_several_users() -> None:
    top = np.array(
        [
            [1, 2, 3, 4],  # u0: relevant {2, 4} -> hits at ranks 2 and 4
            [5, 6, 7, 8],  # u1: relevant {5}    -> hit at rank 1
            [9, 10, 11, 12],  # u2: relevant {13, 14, 15} -> no hit
            [0, 1, 2, 3],  # u3: no relevant item -> skipped (not averaged)
        ]
    )
    relevant = [{2, 4}, {5}, {13, 14, 15}, set()]
    got = rank_metrics(top, relevant, ks=(2, 4))

    # Per user @2:
    #   u0: hits=1 recall=1/2 precision=1/2 hit=1
    #       dcg=D2, idcg over min(2,2)=2 ranks = D1+D2 -> ndcg=D2/(1+D2) ~0.386853
    #   u1: hits=1 recall=1/1 precision=1/2 hit=1, dcg=1, idcg over min(1,2)=1 rank=1 -> ndcg=1
    #   u2: all zero (3 relevant, 0 hits)
    assert got["recall@2"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # 0.5
    assert got["precision@2"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # 1/3
    assert got["hit@2"] == pytest.approx((1 + 1 + 0) / 3)  # 2/3
    assert got["ndcg@2"] == pytest.approx((D2 / (D1 + D2) + 1.0 + 0.0) / 3)  # ~0.462284
    # Per user @4:
    #   u0: hits=2 recall=2/2 precision=2/4 hit=1, dcg=D2+D4 ~1.061606, idcg=D1+D2 ~1.630930
    #       -> ndcg ~0.650921
    #   u1: hits=1 recall=1 precision=1/4 hit=1 ndcg=1
    #   u2: zero
    assert got["recall@4"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)  # 2/3
    assert got["precision@4"] == pytest.approx((0.5 + 0.25 + 0.0) / 3)  # 0.25
    assert got["hit@4"] == pytest.approx(2 / 3)
    assert got["ndcg@4"] == pytest.approx(((D2 + D4) / (D1 + D2) + 1.0 + 0.0) / 3)  # ~0.550307
    assert set(got) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit") for k in (2, 4)}


def test_rank_metrics_relevant_as_arrays_equals_sets() -> None:
    top = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    as_sets = rank_metrics(top, [{2, 4}, {5}], ks=(1, 3))
    as_arrays = rank_metrics(top, [np.array([4, 2, 2]), [5]], ks=(1, 3))  # duplicates ignored
    assert as_arrays == pytest.approx(as_sets)


def test_ndcg_ideal_uses_min_of_relevant_and_k() -> None:
    # u0 has 1 relevant item (< K=3), found at rank 2:
    #   dcg = D2; idcg over min(1, 3) = 1 rank = D1 = 1  -> ndcg = D2 ~0.630930
    #   (an ideal over all K ranks would give D2 / (D1+D2+D3) ~0.296)
    got = rank_metrics(np.array([[7, 3, 8]]), [{3}], ks=(3,))
    assert got["ndcg@3"] == pytest.approx(D2)
    assert got["recall@3"] == pytest.approx(1.0)  # 1 hit / 1 relevant
    assert got["precision@3"] == pytest.approx(1 / 3)  # 1 hit / K

    # u0 has 2 relevant (< K=3), found at ranks 1 and 3:
    #   dcg = D1 + D3 = 1.5; idcg over min(2,3)=2 ranks = D1 + D2 ~1.630930 -> ndcg ~0.919721
    got = rank_metrics(np.array([[3, 7, 5]]), [{3, 5}], ks=(3,))
    assert got["ndcg@3"] == pytest.approx((D1 + D3) / (D1 + D2))


def test_recall_divides_by_all_relevant_not_min_with_k() -> None:
    # 3 relevant items, K=2, both top-2 positions are hits:
    #   recall@2 = 2/3 (standard), not 2/min(3,2)=1; precision@2 = 2/2 = 1
    #   ndcg@2: dcg = D1+D2, idcg over min(3,2)=2 ranks = D1+D2 -> 1
    got = rank_metrics(np.array([[0, 1, 9]]), [{0, 1, 2}], ks=(2,))
    assert got["recall@2"] == pytest.approx(2 / 3)
    assert got["precision@2"] == pytest.approx(1.0)
    assert got["ndcg@2"] == pytest.approx(1.0)
    assert got["hit@2"] == pytest.approx(1.0)


def test_users_without_relevant_items_are_skipped() -> None:
    top = np.array([[1, 2], [3, 4], [5, 6]])
    # Only u1 counts: hit at rank 1 -> recall 1, ndcg 1, precision 1/2, hit 1.
    got = rank_metrics(top, [set(), {3}, []], ks=(2,))
    assert got == pytest.approx({"recall@2": 1.0, "ndcg@2": 1.0, "precision@2": 0.5, "hit@2": 1.0})


def test_no_user_with_relevant_items_raises() -> None:
    with pytest.raises(ValueError, match="no user has a relevant item"):
        rank_metrics(np.array([[1, 2], [3, 4]]), [set(), []], ks=(1,))


def test_padding_never_counts_as_hit() -> None:
    # Ranked list padded with -1 (fewer rankable items than K); relevant {3} at rank 1.
    # @2: hits=1, precision = 1/K = 1/2, recall 1, ndcg 1.
    got = rank_metrics(np.array([[3, -1]]), [{3}], ks=(2,))
    assert got == pytest.approx({"recall@2": 1.0, "ndcg@2": 1.0, "precision@2": 0.5, "hit@2": 1.0})


def test_bad_arguments_raise() -> None:
    top = np.array([[1, 2, 3]])
    with pytest.raises(ValueError, match="exceeds"):
        rank_metrics(top, [{1}], ks=(4,))
    with pytest.raises(ValueError, match="positive"):
        rank_metrics(top, [{1}], ks=(0,))
    with pytest.raises(ValueError, match="entries"):
        rank_metrics(top, [{1}, {2}], ks=(1,))


# --------------------------------------------------------------------------------------------
# top_k_items
# --------------------------------------------------------------------------------------------


def test_top_k_orders_by_score() -> None:
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    item = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.9, 0.0], [0.3, 0.7]])
    # u0 scores (first coordinate): [0.1, 0.5, 0.9, 0.3] -> 2, 1, 3
    # u1 scores (second coordinate): [0.9, 0.2, 0.0, 0.7] -> 0, 3, 1
    got = top_k_items(user, item, None, k=3)
    np.testing.assert_array_equal(got, [[2, 1, 3], [0, 3, 1]])
    assert got.dtype == np.int64


def test_ties_resolved_to_lower_item_id() -> None:
    user = torch.tensor([[1.0]])
    # Scores = item values: [1, 2, 2, 2, 0]; the three 2s must come out as 1, 2, 3.
    item = torch.tensor([[1.0], [2.0], [2.0], [2.0], [0.0]])
    np.testing.assert_array_equal(top_k_items(user, item, None, k=2), [[1, 2]])  # tie at cut
    np.testing.assert_array_equal(top_k_items(user, item, None, k=4), [[1, 2, 3, 0]])
    # Ties ranked below a higher score: [2, 2, 3] -> 2, then 0 before 1.
    item = torch.tensor([[2.0], [2.0], [3.0]])
    np.testing.assert_array_equal(top_k_items(user, item, None, k=3), [[2, 0, 1]])
    # All equal, item 1 masked -> 0, 2, 3.
    item = torch.ones(6, 1)
    exclude = _csr([[1]], 6)
    np.testing.assert_array_equal(top_k_items(user, item, exclude, k=3), [[0, 2, 3]])


def _reference_top_k(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Brute force: sort unmasked items by (-score, id), pad with -1."""
    out = np.full((scores.shape[0], k), -1)
    for u in range(scores.shape[0]):
        unmasked = [i for i in range(scores.shape[1]) if not exclude[u, i]]
        order = sorted(unmasked, key=lambda i: (-scores[u, i], i))[:k]
        out[u, : len(order)] = order
    return out


@pytest.mark.parametrize("batch_size", [1, 7, 2048])
def test_top_k_matches_brute_force_with_many_ties(batch_size: int) -> None:
    rng = np.random.default_rng(0)
    # Small integer embeddings -> exact float scores with many ties, also across the cut-off.
    user = rng.integers(-1, 2, size=(40, 2)).astype(np.float32)
    item = rng.integers(-1, 2, size=(30, 2)).astype(np.float32)
    mask = rng.random((40, 30)) < 0.3
    mask[0, :] = True  # a user with nothing to rank
    mask[1, 3:] = True  # a user with only 3 rankable items (< k)
    exclude = sp.csr_matrix(mask.astype(np.float64))
    got = top_k_items(torch.from_numpy(user), torch.from_numpy(item), exclude, 8, batch_size)
    np.testing.assert_array_equal(got, _reference_top_k(user @ item.T, mask, 8))
    assert (got[0] == -1).all()


def test_masked_items_never_in_top_k() -> None:
    torch.manual_seed(0)
    user, item = torch.randn(25, 8), torch.randn(60, 8)
    exclude = sp.random(25, 60, density=0.4, format="csr", random_state=2)
    got = top_k_items(user, item, exclude, k=20, batch_size=6)
    for u in range(25):
        masked = set(exclude[u].indices.tolist())
        assert masked.isdisjoint(got[u].tolist())
        assert len(set(got[u].tolist())) == 20  # 60 * 0.6 = 36 rankable > 20: no padding
    # Exclusion beats score: mask each user's otherwise-best item.
    best = top_k_items(user, item, None, k=1)[:, 0]
    mask_best = sp.csr_matrix((np.ones(25), (np.arange(25), best)), shape=(25, 60))
    again = top_k_items(user, item, mask_best, k=5)
    assert (again != best[:, None]).all()


def test_explicit_zeros_in_exclude_do_not_mask() -> None:
    user, item = torch.tensor([[1.0]]), torch.tensor([[3.0], [2.0], [1.0]])
    exclude = sp.csr_matrix((np.array([0.0, 1.0]), ([0, 0], [0, 1])), shape=(1, 3))
    # Stored 0 at item 0 is not a mask; item 1 is masked -> 0, 2.
    np.testing.assert_array_equal(top_k_items(user, item, exclude, k=2), [[0, 2]])


def test_k_larger_than_available_items_is_padded() -> None:
    user = torch.tensor([[1.0], [-1.0]])
    item = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    exclude = _csr([[4, 0], []], 5)
    # u0: items 1, 2, 3 left (scores 2, 3, 4) -> 3, 2, 1, then padding.
    # u1: all 5 items, scores -1..-5 -> 0..4; k=7 > 5 items -> two padding positions.
    got = top_k_items(user, item, exclude, k=7)
    np.testing.assert_array_equal(got, [[3, 2, 1, -1, -1, -1, -1], [0, 1, 2, 3, 4, -1, -1]])
    # u0 relevant {1} at rank 3; u1 relevant {4} at rank 5.
    # @4: u0 hit (recall 1, precision 1/4, ndcg D3/1 = 0.5); u1 no hit.
    # -> recall (1+0)/2, precision (1/4+0)/2, ndcg (0.5+0)/2, hit 1/2
    m = rank_metrics(got, [{1}, {4}], ks=(4,))
    assert m == pytest.approx(
        {"recall@4": 0.5, "precision@4": 0.125, "ndcg@4": D3 / 2, "hit@4": 0.5}
    )


def test_top_k_rejects_bad_input() -> None:
    user, item = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="k must be positive"):
        top_k_items(user, item, None, k=0)
    with pytest.raises(ValueError, match="shape"):
        top_k_items(user, item, sp.csr_matrix((3, 6)), k=2)
    with pytest.raises(ValueError, match="embedding sizes"):
        top_k_items(user, torch.randn(5, 3), None, k=2)
    with pytest.raises(ValueError, match="NaN"):
        top_k_items(user, torch.full((5, 4), float("nan")), None, k=2)


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def _random_split(num_users: int, num_items: int, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    train = rng.random((num_users, num_items)) < 0.2
    test = (rng.random((num_users, num_items)) < 0.08) & ~train
    for u in range(num_users):  # every user gets >= 1 held-out item ...
        test[u, rng.choice(np.flatnonzero(~train[u]))] = True
    test[::5] = False  # ... except every fifth user, who has none
    return sp.csr_matrix(test.astype(np.float32)), sp.csr_matrix(train.astype(np.float32))


def test_evaluate_equals_rank_metrics_of_top_k() -> None:
    torch.manual_seed(0)
    user, item = torch.randn(50, 16), torch.randn(40, 16)
    test, train = _random_split(50, 40, seed=3)
    ks = (5, 10, 20)
    got = evaluate(user, item, test, train, ks=ks, batch_size=8)

    users = np.flatnonzero(np.diff(test.indptr))
    assert got["users"] == len(users) == 40  # 50 users minus the 10 without held-out items
    top = top_k_items(user[users], item, train[users], k=20)
    want = rank_metrics(top, [set(test[u].indices.tolist()) for u in users], ks)
    assert {k: v for k, v in got.items() if k != "users"} == pytest.approx(want)
    # Including the users without relevant items in the ranking changes nothing.
    everyone = top_k_items(user, item, train, k=20)
    assert rank_metrics(everyone, [set(r.indices.tolist()) for r in test], ks) == pytest.approx(
        want
    )


def test_evaluate_oracle_scores_perfectly() -> None:
    # 6 users, 8 items, one-hot item embeddings. User u's relevant item is rel[u] (score 1);
    # its training item trn[u] scores 2 but is masked; every other item scores 0.
    num_users, num_items = 6, 8
    rel = [3, 0, 7, 5, 1, 2]
    trn = [4, 6, 6, 0, 2, 1]
    item = torch.eye(num_items)
    user = torch.zeros(num_users, num_items)
    user[range(num_users), rel] = 1.0
    user[range(num_users), trn] = 2.0
    relevant = _csr([[i] for i in rel], num_items)
    exclude = _csr([[i] for i in trn], num_items)
    got = evaluate(user, item, relevant, exclude, ks=(1, 2, 5))
    assert got["users"] == 6
    for k in (1, 2, 5):
        assert got[f"recall@{k}"] == pytest.approx(1.0)
        assert got[f"ndcg@{k}"] == pytest.approx(1.0)
        assert got[f"hit@{k}"] == pytest.approx(1.0)
        assert got[f"precision@{k}"] == pytest.approx(1.0 / k)  # one relevant item among K
    # Without the mask the training item takes rank 1 and the relevant one drops to rank 2:
    # recall@1 = 0, recall@2 = 1, ndcg@2 = D2 / 1.
    unmasked = evaluate(user, item, relevant, None, ks=(1, 2))
    assert unmasked["recall@1"] == pytest.approx(0.0)
    assert unmasked["recall@2"] == pytest.approx(1.0)
    assert unmasked["ndcg@2"] == pytest.approx(D2)


def test_evaluate_default_ks_and_empty_relevant() -> None:
    torch.manual_seed(1)
    user, item = torch.randn(12, 4), torch.randn(60, 4)
    test, train = _random_split(12, 60, seed=4)
    got = evaluate(user, item, test, train)
    assert {"recall@10", "ndcg@20", "precision@50", "hit@50", "users"} <= set(got)
    with pytest.raises(ValueError, match="no user has a relevant item"):
        evaluate(user, item, sp.csr_matrix((12, 60)), train)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluate_on_cuda_matches_cpu() -> None:
    torch.manual_seed(2)
    user, item = torch.randn(300, 32), torch.randn(200, 32)
    test, train = _random_split(300, 200, seed=5)
    cpu = evaluate(user, item, test, train, ks=(5, 20))
    gpu = evaluate(user.cuda(), item.cuda(), test, train, ks=(5, 20), batch_size=64)
    assert gpu == pytest.approx(cpu)
    # Exact integer scores with many ties: same deterministic order as on the CPU.
    rng = np.random.default_rng(6)
    user_i = rng.integers(-1, 2, size=(40, 2)).astype(np.float32)
    item_i = rng.integers(-1, 2, size=(30, 2)).astype(np.float32)
    mask = rng.random((40, 30)) < 0.3
    got = top_k_items(
        torch.from_numpy(user_i).cuda(), torch.from_numpy(item_i).cuda(), sp.csr_matrix(mask), 8
    )
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, _reference_top_k(user_i @ item_i.T, mask, 8))
