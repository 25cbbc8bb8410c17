import numpy as np
import pytest

from benchmarks.stats import pack_hits, pack_ranks, paired_bootstrap, unpack_hits, unpack_ranks


@pytest.mark.parametrize("size", [1, 7, 8, 9, 50_000])
def test_packed_hits_come_back_exactly(size: int) -> None:
    hits = (np.random.default_rng(size).random(size) < 0.3).astype(np.float64)
    assert np.array_equal(unpack_hits(pack_hits(hits), size), hits)


def test_packing_refuses_anything_but_hits() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        pack_hits(np.array([0.0, 0.5, 1.0]))


def test_packed_ranks_come_back_exactly_and_out_of_range_ones_are_refused() -> None:
    ranks = np.random.default_rng(0).integers(0, 11, 50_000)
    assert np.array_equal(unpack_ranks(pack_ranks(ranks)), ranks)
    with pytest.raises(ValueError, match="0..255"):
        pack_ranks(np.array([3, 256]))


def test_paired_bootstrap_brackets_a_known_difference() -> None:
    rng = np.random.default_rng(0)
    b = (rng.random(20_000) < 0.2).astype(float)
    a = np.where(rng.random(20_000) < 0.1, 1.0, b)  # a gains ~8 points over b, never loses
    mean, low, high = paired_bootstrap(a, b)
    assert low > 0 and low <= mean <= high
    assert mean == pytest.approx(a.mean() - b.mean())


def test_packed_values_come_back_within_float16() -> None:
    from benchmarks.stats import pack_values, unpack_values

    values = np.array([0.0, 1.0, 1 / 3, 2 / 7, 0.05])
    assert np.allclose(unpack_values(pack_values(values)), values, atol=5e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pack_values(np.array([1.5]))
