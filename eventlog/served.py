"""Served lists and the online evaluation built on them (what Gorse calls its online metrics).

The service logs the recommendation lists it serves to a user (sampled by
``RECSYS_SERVED_SAMPLE``, written in batches off the request path) into one table, compactly:
the user, the bundle version, the time, the item ids in list order and one flag character per
item (``w`` warm, ``n`` new, ``r`` new in a reserved slot). :func:`online_hit_rates` then takes
the interactions logged after a list was served to that user, within a window, and counts how
many hit it: per model version and per day, with the hits on warm and on new items apart.

Torch-free, and importing neither the service nor training: the nightly job reads it too.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select

from eventlog.store import Store

WARM, NEW, RESERVED = "w", "n", "r"  # one flag character per listed item
DAY_S = 86_400.0


@dataclass(frozen=True)
class ServedList:
    """One list served to a user: item ids in list order and a flag character per item."""

    user_id: str
    model_version: str
    served_at: float
    items: tuple[str, ...]
    flags: str  # len(flags) == len(items); WARM, NEW or RESERVED each

    @staticmethod
    def flag(new: bool, reserved: bool) -> str:
        return RESERVED if reserved else NEW if new else WARM


def add_served(store: Store, lists: Sequence[ServedList]) -> None:
    """Append served lists in one transaction (one statement, executemany)."""
    if not lists:
        return
    rows = [{"user_id": s.user_id, "model_version": s.model_version, "served_at": s.served_at,
             "items": json.dumps(list(s.items), separators=(",", ":")), "flags": s.flags}
            for s in lists]
    with store.engine.begin() as conn:
        conn.execute(store.served.insert(), rows)


def iter_served(store: Store, since: float = 0.0,
                until: float | None = None) -> Iterable[ServedList]:
    """Served lists with ``since <= served_at < until``, oldest first."""
    table = store.served
    query = select(table).where(table.c.served_at >= since)
    if until is not None:
        query = query.where(table.c.served_at < until)
    with store.engine.connect() as conn:
        for row in conn.execution_options(yield_per=5000).execute(
                query.order_by(table.c.served_at, table.c.id)):
            yield ServedList(row.user_id, row.model_version, float(row.served_at),
                             tuple(json.loads(row.items)), row.flags)


def prune_served(store: Store, before: float) -> int:
    """Delete the lists served before a time; returns how many."""
    with store.engine.begin() as conn:
        return int(conn.execute(store.served.delete()
                                .where(store.served.c.served_at < before)).rowcount or 0)


def _day(seconds: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def online_hit_rates(store: Store, since: float, until: float | None = None, *,
                     window_s: float = DAY_S, version: str | None = None,
                     by_day: bool = True) -> list[dict[str, Any]]:
    """Of the interactions logged in ``[since, until)`` that follow a list served to their user
    at most ``window_s`` earlier, the share that hit it: one row per model version and UTC day
    of the interaction (``by_day=False``: one row per version, ``day`` null), sorted.

    An interaction counts for the version of the latest list served to its user before it
    within the window, and is a hit when its item is in any list that version served the user
    in the window (the most recent such list says whether the item was warm, new or new in a
    reserved slot). ``warm_hit_rate + new_hit_rate == hit_rate``; ``reserved_hits`` are among
    the new hits. ``lists`` counts the (sampled) lists served in ``[since, until)``.
    """
    until = time.time() if until is None else until
    if not inspect(store.engine).has_table(store.served.name):
        return []  # a store no service of this version has written to yet (nothing served)
    served: dict[str, tuple[list[float], list[ServedList]]] = defaultdict(lambda: ([], []))
    counts: dict[tuple[str, str | None], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("lists", "interactions", "hits", "warm_hits", "new_hits",
                               "reserved_hits"), 0))
    for listed in iter_served(store, since - window_s, until):
        times, lists = served[listed.user_id]
        times.append(listed.served_at)
        lists.append(listed)
        if listed.served_at >= since and (version is None or listed.model_version == version):
            counts[(listed.model_version, _day(listed.served_at) if by_day else None)][
                "lists"] += 1
    for event in store.iter_interactions(logged_after=since - 1e-9):
        if event.logged_at >= until or event.user_id not in served:
            continue
        times, lists = served[event.user_id]
        end = bisect.bisect_left(times, event.logged_at)  # lists served strictly before it
        start = bisect.bisect_left(times, event.logged_at - window_s)
        if end <= start:
            continue
        latest = lists[end - 1].model_version
        if version is not None and latest != version:
            continue
        row = counts[(latest, _day(event.logged_at) if by_day else None)]
        row["interactions"] += 1
        for listed in reversed(lists[start:end]):
            if listed.model_version != latest or event.item_id not in listed.items:
                continue
            flag = listed.flags[listed.items.index(event.item_id)]
            row["hits"] += 1
            row["warm_hits" if flag == WARM else "new_hits"] += 1
            row["reserved_hits"] += flag == RESERVED
            break
    out = []
    for (model_version, day), row in sorted(counts.items(), key=lambda kv: (kv[0][0],
                                                                            kv[0][1] or "")):
        total = row["interactions"]
        rates = {f"{name}_rate": row[name] / total if total else None
                 for name in ("hits", "warm_hits", "new_hits")}
        out.append({"model_version": model_version, "day": day, **row,
                    "hit_rate": rates["hits_rate"], "warm_hit_rate": rates["warm_hits_rate"],
                    "new_hit_rate": rates["new_hits_rate"]})
    return out
