"""The CPU part of answering recommendation requests that no cache answered: a batch of
queries ranked together (user vectors, then one FAISS search per bundle)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.index import Hit
from service.model import ServingModel


@dataclass(frozen=True)
class Query:
    """One recommendation request that the memory layer could not answer."""

    model: ServingModel
    user_id: str | None
    history: list[str]
    exclude: list[str]
    k: int
    key: str = ""  # its Redis key


Ranked = tuple[list[Hit], str]  # best first, and where the user vector came from
Answer = tuple[bytes, bytes, bool]  # source, items JSON, whether it came from Redis


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
        k = max(requests[position].k for position in ranked)
        hits = model.search(np.stack(vectors), k, excluded)
        for position, found, source in zip(ranked, hits, sources, strict=True):
            results[position] = (found[: requests[position].k], source)
    return results  # type: ignore[return-value]  # every position is a model's, so set


def timed_rank_batch(requests: Sequence[Query]) -> tuple[list[Ranked | Exception], float]:
    """:func:`rank_batch` and the CPU seconds it took (the service's inline-or-thread choice)."""
    started = time.thread_time()  # CPU time: other processes on the cores must not count
    results = rank_batch(requests)
    return results, time.thread_time() - started
