"""Rules that a bundle asks the service to apply, shared by evaluation and the service.

No torch here: the service imports this module with the rest of :mod:`bundle`, so a
list is built by exactly the same code in the report that chose the rule and in production.

**Reserved new-item slots.** Items without training interactions (and items added online) are
ranked by the model's new-item path; whether they ever reach a list depends on how their scores
compare with popular warm items. A calibrated scale (``training.calibration``) moves all of
them up or down together, so the items that enter are the ones whose scores happen to be
largest, for every user alike. Reserving slots instead guarantees new items a share of every
list and fills that share with the user's best new items (ranked among new items only, where the
content path is measured at its best), while the other slots keep the warm ranking.

The rule, for a share ``s``: in every prefix of ``p`` positions at least ``floor(s * p)`` items
are new. Merging walks the full ranking and the new-item ranking together and takes the next new
item only where the quota requires it, so new items that rank high on their own keep their
places, reserved ones land at the end of each block (positions 10 and 20 for ``s = 0.1``), and
the list for any ``k`` is the first ``k`` items of the list for a larger one (the service ranks
a batch at its largest ``k`` and cuts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

Entry = TypeVar("Entry")

# floor(s * p) computed in floating point: 0.1 * 10 must give 1, not 0.
_EPSILON = 1e-9


def reserved_slots(share: float, length: int) -> int:
    """How many of the first ``length`` positions must hold new items."""
    return math.floor(share * length + _EPSILON) if share > 0 else 0


def check_share(share: float) -> float:
    if not 0.0 <= share < 1.0:
        raise ValueError(f"new-item slot share must be in [0, 1), got {share}")
    return float(share)


def interleave_new_items(
    ranked: Sequence[Entry],
    new_ranked: Sequence[Entry],
    share: float,
    length: int,
    *,
    is_new: Callable[[Entry], bool],
    key: Callable[[Entry], Hashable] = lambda entry: entry,
) -> list[Entry]:
    """The first ``length`` entries of ``ranked`` with new items reserved ``share`` of every
    prefix (see the module docstring).

    Args:
        ranked: the full ranking (warm and new items), best first.
        new_ranked: the ranking among new items only, best first, by the same scores.
        share: reserved share of each prefix; 0 returns ``ranked[:length]``.
        length: list length.
        is_new: whether an entry of ``ranked`` is a new item.
        key: identity of an entry, so that an item found in both rankings is listed once.
    """
    if reserved_slots(share, length) == 0:
        return list(ranked[:length])
    out: list[Entry] = []
    used: set[Hashable] = set()
    main = new = count_new = 0
    while len(out) < length:
        entry = None
        if count_new < reserved_slots(share, len(out) + 1):
            while new < len(new_ranked) and key(new_ranked[new]) in used:
                new += 1
            if new < len(new_ranked):
                entry, new = new_ranked[new], new + 1
        if entry is None:  # quota met, or no new item left
            while main < len(ranked) and key(ranked[main]) in used:
                main += 1
            if main == len(ranked):
                break
            entry, main = ranked[main], main + 1
        used.add(key(entry))
        out.append(entry)
        count_new += bool(is_new(entry))
    return out
