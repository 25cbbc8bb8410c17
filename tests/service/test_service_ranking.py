"""Batched ranking: a batch answers each request exactly as if it were alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bundle.testing import FactoryBundle, features_for, make_bundle
from service.errors import NotReady
from service.index import IndexConfig
from service.metrics import Metrics
from service.model import ServingModel
from service.operations import RecommendationService
from service.ranking import Query, rank_batch
from tests.service.helpers import brute_force


@pytest.fixture
def model(factory: FactoryBundle) -> ServingModel:
    return ServingModel.load(factory.path, IndexConfig(), verify=False)


def names(ranked) -> list[str]:
    return [item_id for item_id, _ in ranked[0]]


def test_a_batch_ranks_every_request_as_if_alone(model, factory: FactoryBundle):
    requests = [
        Query(model, "u3", [], [], 10),
        Query(model, "u4", [], ["i1", "i2"], 3),
        Query(model, None, ["i5", "i6"], [], 25),
        Query(model, "u7", ["i9"], ["i0"], 1),
    ]
    batched = rank_batch(requests)
    alone = [rank_batch([request])[0] for request in requests]
    assert [names(r) for r in batched] == [names(r) for r in alone]
    assert [r[1] for r in batched] == ["stored", "stored", "tower", "tower"]
    for together, single in zip(batched, alone, strict=True):
        assert [s for _, s in together[0]] == pytest.approx([s for _, s in single[0]], abs=1e-5)
    assert names(batched[0]) == brute_force(factory, factory.user_embeddings[3], 10,
                                            exclude=factory.trained_items(3))
    excluded = set(factory.trained_items(4)) | {"i1", "i2"}
    assert names(batched[1]) == brute_force(factory, factory.user_embeddings[4], 3,
                                            exclude=excluded)


def test_a_failing_request_gets_its_error_and_the_others_their_answers(model, factory):
    towerless = ServingModel.load(factory.path, IndexConfig(), verify=False)
    towerless.user_tower = None  # as served from a bundle without user_tower.onnx
    requests = [Query(model, None, ["i5"], [], 5),
                Query(towerless, None, ["i5"], [], 5),
                Query(towerless, "u3", [], [], 5)]
    ok, failed, stored = rank_batch(requests)
    assert isinstance(failed, NotReady)
    assert ok[1] == "tower" and len(ok[0]) == 5 and stored[1] == "stored"


def test_concurrent_requests_are_ranked_in_batches_with_the_same_answers(make_settings,
                                                                         factory):
    metrics = Metrics()
    service = RecommendationService(make_settings(redis_url="", local_cache_items=0), metrics)
    service.start()

    def batches() -> tuple[float, float]:  # (number of miss batches, requests in them)
        count = metrics.registry.get_sample_value("recsys_miss_batch_size_count")
        total = metrics.registry.get_sample_value("recsys_miss_batch_size_sum")
        return count or 0.0, total or 0.0

    async def scenario():
        users = [f"u{n}" for n in range(12)]
        together = await asyncio.gather(*(service.recommend_user(u, 7) for u in users))
        assert batches() == (1, 12)  # one FAISS search for all twelve
        one_by_one = [await service.recommend_user(u, 7) for u in users]
        assert batches() == (13, 24)
        return together, one_by_one

    together, one_by_one = asyncio.run(scenario())
    service.store.close()
    assert together == one_by_one


def test_reserved_slots_go_to_the_bundles_new_items_then_online_ones(tmp_path):
    new = [f"i{n}" for n in range(190, 200)]
    factory = make_bundle(tmp_path / "slots", new_items=new, new_item_slots=0.1)
    model = ServingModel.load(factory.path, IndexConfig(), verify=False)
    assert model.new_item_slots == 0.1 and len(model.new_index) == len(new)
    user = factory.user_embeddings[3]
    seen = set(model.seen("u3"))
    plain = brute_force(factory, user, 20, exclude=seen)
    listed = names(rank_batch([Query(model, "u3", [], [], 20)])[0])
    best_new = [n for n in brute_force(factory, user, 200, exclude=seen) if n in new]
    # every prefix of p positions holds floor(p / 10) new items, the user's best ones
    for p in range(1, 21):
        assert sum(n in new for n in listed[:p]) >= p // 10
    assert [n for n in listed if n in new] == best_new[: sum(n in new for n in listed)]
    assert [n for n in listed if n not in new] == [n for n in plain if n not in new][
        : sum(n not in new for n in listed)
    ]
    # a cut at k=10 is the first ten of the k=20 list (the batch ranks at its largest k)
    assert names(rank_batch([Query(model, "u3", [], [], 10)])[0]) == listed[:10]
    # an online item is a new item too; deleting it takes it out of the reserved pool
    target = user / np.linalg.norm(user) * 1e-3  # scored far below every warm item
    embedding, state = model.embed(features_for(factory, target[None]))
    model.apply_items(["online-1"], embedding, state)
    assert "online-1" in model.new_index
    model.apply_delete("online-1")
    assert "online-1" not in model.new_index


def test_a_bundle_without_slots_ranks_as_before(model, factory: FactoryBundle):
    assert model.new_item_slots == 0.0 and len(model.new_index) == 0
    listed = names(rank_batch([Query(model, "u3", [], [], 20)])[0])
    assert listed == brute_force(factory, factory.user_embeddings[3], 20,
                                 exclude=model.seen("u3"))
