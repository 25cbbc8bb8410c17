"""Uncertainty of a difference between two models scored on the same users.

Two models evaluated on one test split share its users, so the noise of "which users happen
to be in the split" cancels in their per-user differences: a paired bootstrap of those
differences gives a much tighter (and honest) interval than comparing two overall means.
"""

from __future__ import annotations

import base64

import numpy as np

#: Cap on the ``[resamples, users]`` index block drawn at once (~40 MB of int64).
_BLOCK_CELLS = 5_000_000


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(mean(a - b), low, high)``: percentile bootstrap interval over users.

    ``a[u]`` and ``b[u]`` are the two models' scores of user ``u``; users are resampled with
    replacement ``n`` times (vectorised, in blocks so large splits fit in memory).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be aligned 1-D arrays, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no users to compare")
    diff = a - b
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // diff.size)
    means = np.concatenate([
        diff[rng.integers(0, diff.size, size=(min(block, n - start), diff.size))].mean(axis=1)
        for start in range(0, n, block)
    ])
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(low), float(high)


def pack_hits(hits: np.ndarray) -> str:
    """0/1 per-user hits as base64 bits: small enough to commit beside the table they make.

    A leave-one-out hit at k is 0 or 1, so 50,000 users take 8 KB of text instead of an
    ignored array file, and the paired intervals can be recomputed from the committed record.
    """
    hits = np.asarray(hits)
    if not np.isin(hits, (0, 1)).all():
        raise ValueError("hits must be 0 or 1")
    return base64.b64encode(np.packbits(hits.astype(np.uint8)).tobytes()).decode("ascii")


def unpack_hits(text: str, size: int) -> np.ndarray:
    """The ``size`` hits :func:`pack_hits` wrote, as float64."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    return bits[:size].astype(np.float64)


def pack_values(values: np.ndarray) -> str:
    """Per-user scores in [0, 1] (a recall) as base64 float16: 2 bytes a user, committed
    beside the table they make (a recall k/n with n < 1,000 keeps 3 significant digits)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError("values must lie in [0, 1]")
    return base64.b64encode(values.astype("<f2").tobytes()).decode("ascii")


def unpack_values(text: str) -> np.ndarray:
    """The values :func:`pack_values` wrote, as float64."""
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float64)


def pack_ranks(ranks: np.ndarray) -> str:
    """Per-user ranks 0..255 (a top-k position, k for a miss) as base64 bytes, one a user."""
    ranks = np.asarray(ranks)
    if ranks.size and (ranks.min() < 0 or ranks.max() > 255):
        raise ValueError("ranks must lie in 0..255")
    return base64.b64encode(ranks.astype(np.uint8).tobytes()).decode("ascii")


def unpack_ranks(text: str) -> np.ndarray:
    """The ranks :func:`pack_ranks` wrote, as int64."""
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).astype(np.int64)
