import numpy as np

from training.sampling import BPRSampler


def test_negatives_are_never_positives_of_their_user() -> None:
    rng = np.random.default_rng(0)
    # dense users: each has 18 of 20 items, so a naive draw would clash 90% of the time
    train = np.array([(u, i) for u in range(50) for i in rng.choice(20, 18, replace=False)])
    sampler = BPRSampler(train, 20, seed=1)
    for users, positives, negatives in sampler.epoch(batch_size=64):
        assert not sampler.is_positive(users, negatives).any()
        assert sampler.is_positive(users, positives).all()


def test_an_epoch_covers_every_pair_once() -> None:
    train = np.array([(u, i) for u in range(10) for i in range(u, u + 5)])
    sampler = BPRSampler(train, 30, seed=0)
    seen = np.concatenate([np.stack([u, p], 1) for u, p, _ in sampler.epoch(batch_size=7)])
    assert sorted(map(tuple, seen)) == sorted(map(tuple, train))


def test_negatives_come_from_candidates_only() -> None:
    train = np.array([(0, 0), (1, 1)])
    sampler = BPRSampler(train, 100, candidate_items=np.array([5, 6, 7]), seed=0)
    assert set(sampler.negatives(np.zeros(500, dtype=np.int64)).tolist()) <= {5, 6, 7}
