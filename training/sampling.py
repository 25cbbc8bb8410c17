"""BPR triples: each training pair with a negative item the user has not interacted with."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class BPRSampler:
    """Shuffles the training pairs each epoch and draws one negative per pair.

    Negatives come uniformly from ``candidate_items`` (all items by default; the cold-start
    protocol passes only the items seen in training) and are redrawn until none is a positive
    of its user. Membership is checked on sorted ``user * num_items + item`` keys, vectorised.
    """

    def __init__(
        self,
        train: np.ndarray,
        num_items: int,
        *,
        candidate_items: np.ndarray | None = None,
        seed: int = 2024,
    ) -> None:
        if len(train) == 0:
            raise ValueError("no training interactions to sample from")
        self.train = train.astype(np.int64)
        self.num_items = num_items
        self.candidates = (
            np.arange(num_items, dtype=np.int64) if candidate_items is None else candidate_items
        )
        self.positive_keys = np.unique(self.train[:, 0] * num_items + self.train[:, 1])
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.train)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.num_items + items
        slots = np.searchsorted(self.positive_keys, keys).clip(max=len(self.positive_keys) - 1)
        return self.positive_keys[slots] == keys

    def _draw(self, count: int) -> np.ndarray:
        return self.candidates[self.rng.integers(len(self.candidates), size=count)]

    def negatives(self, users: np.ndarray, max_rounds: int = 20) -> np.ndarray:
        items = self._draw(len(users))
        for _ in range(max_rounds):
            clash = self.is_positive(users, items)
            if not clash.any():
                return items
            items[clash] = self._draw(int(clash.sum()))
        # Users who own most of the catalogue: draw exactly from their complement.
        for row in np.flatnonzero(self.is_positive(users, items)):
            user = users[row]
            owned = self.is_positive(np.full_like(self.candidates, user), self.candidates)
            free = self.candidates[~owned]
            if len(free) == 0:
                raise ValueError(f"user {user} has interacted with every candidate item")
            items[row] = free[self.rng.integers(len(free))]
        return items

    def epoch(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(users, positives, negatives)`` batches covering every pair once."""
        order = self.rng.permutation(len(self.train))
        for start in range(0, len(order), batch_size):
            pairs = self.train[order[start : start + batch_size]]
            users, positives = pairs[:, 0], pairs[:, 1]
            yield users, positives, self.negatives(users)
