"""The CPU part of answering recommendation requests that no cache answered: a batch of
queries ranked together (user vectors, then one FAISS search per bundle)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bundle.serving_rules import reserved_slots
from service.index import Hit
from service.model import ServingModel
from service.responses import items_json


@dataclass(frozen=True)
class Query:
    """One recommendation request that the memory layer could not answer."""

    model: ServingModel
    user_id: str | None
    history: list[str]
    exclude: list[str]
    k: int
    key: str = ""  # its Redis key
    offset: int = 0  # the list starts after this many of the best items


Ranked = tuple[list[Hit], str]  # best first, and where the user vector came from
Answer = tuple[bytes, bytes, bool]  # source, items JSON, whether it came from Redis
Listed = tuple[str, float, bool, bool]  # item id, score, reserved slot, new item


def flagged(model: ServingModel, hits: Sequence[Hit], offset: int = 0, *,
            ranked: bool = True) -> list[Listed]:
    """``hits[offset:]`` with each item's flags: ``new`` (no training interactions: the
    bundle's new items and every item added online) and ``reserved`` (in the list because of
    the bundle's reserved new-item share). ``hits`` is the whole list from the top: the quota
    of ``bundle.serving_rules.interleave_new_items`` counts from the first position, and a
    position it fills with a new item is exactly one where fewer new items came before than
    the quota asks (a new item that ranks there on its own comes when the quota is met).
    ``ranked=False``: a list that no quota filled (popularity), nothing reserved."""
    share, new_index = model.new_item_slots if ranked else 0.0, model.new_index
    out: list[Listed] = []
    count_new = 0
    for position, (item_id, score) in enumerate(hits):
        new = item_id in new_index
        reserved = new and count_new < reserved_slots(share, position + 1)
        count_new += new
        if position >= offset:
            out.append((item_id, score, reserved, new))
    return out


def listed_json(query: Query, hits: Sequence[Hit]) -> bytes:
    """The items JSON of a ranked query's page (``hits`` from the top, see ``flagged``)."""
    return items_json(flagged(query.model, hits, query.offset))


def popular_json(model: ServingModel, k: int, offset: int, exclude: Sequence[str]) -> bytes:
    """The items JSON of the popularity fallback's page (no quota filled it)."""
    hits = model.popular_items(offset + k, exclude)
    return items_json(flagged(model, hits, offset, ranked=False))


def rank_batch(requests: Sequence[Query]) -> list[Ranked | Exception]:
    """The CPU part of recommendations: user vectors (stored or user tower), then one FAISS
    search per bundle for the whole batch. A request that fails gets its exception back
    instead of failing the others."""
    results: list[Ranked | Exception | None] = [None] * len(requests)  # each one set below
    by_model: dict[int, list[int]] = {}
    for position, request in enumerate(requests):
        by_model.setdefault(id(request.model), []).append(position)
    for positions in by_model.values():
        model = requests[positions[0]].model
        ranked, vectors, sources, excluded = [], [], [], []
        for position in positions:
            request = requests[position]
            try:
                vector, source = model.user_vector(request.user_id, request.history)
            except Exception as error:  # noqa: BLE001 - this request's answer, not the batch's
                results[position] = error
                continue
            ranked.append(position)
            vectors.append(vector)
            sources.append(source)
            excluded.append(model.seen(request.user_id) | set(request.history)
                            | set(request.exclude))
        if not ranked:
            continue
        # the whole list from the top (its first offset + k): see ``flagged``
        k = max(requests[position].k + requests[position].offset for position in ranked)
        hits = model.search(np.stack(vectors), k, excluded)
        for position, found, source in zip(ranked, hits, sources, strict=True):
            request = requests[position]
            results[position] = (found[: request.offset + request.k], source)
    return results  # type: ignore[return-value]  # every position is a model's, so set


def timed_rank_batch(requests: Sequence[Query]) -> tuple[list[Ranked | Exception], float]:
    """:func:`rank_batch` and the CPU seconds it took (the service's inline-or-thread choice)."""
    started = time.thread_time()  # CPU time: other processes on the cores must not count
    results = rank_batch(requests)
    return results, time.thread_time() - started
