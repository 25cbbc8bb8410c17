"""The HTTP API in-process (TestClient) over real ONNX Runtime, FAISS, SQLite and Redis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bundle.testing import FactoryBundle, features_for
from service.app import create_app
from tests.service.conftest import AUTH, redis_reachable
from tests.service.helpers import brute_force, ids, item_body


def index_size(client: TestClient) -> int:
    return client.get("/readyz").json()["index_items"]


def test_health_ready_and_metrics(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["store"] and ready["model_version"] == "v1"
    assert ready["modalities"] == [{"name": "audio", "dim": 8}, {"name": "image", "dim": 12}]
    assert ready["index_items"] == 200 and ready["index_type"] == "flat"
    client.get("/recommend/u0")
    text = client.get("/metrics").text
    for name in ("recsys_request_seconds_bucket", 'route="/recommend/{user_id}"',
                 "recsys_cache_requests_total", "recsys_index_items 200.0",
                 "recsys_items_ingested_total", 'recsys_model_info{model="factory",version="v1"}',
                 "recsys_redis_errors_total"):
        assert name in text


def test_known_user_without_new_events_gets_stored_vector_top_k(client, factory: FactoryBundle):
    body = client.get("/recommend/u3?k=15").json()
    seen = factory.trained_items(3)
    assert body["source"] == "stored" and body["model_version"] == "v1"
    assert ids(body) == brute_force(factory, factory.user_embeddings[3], 15, exclude=seen)
    assert not set(ids(body)) & set(seen)
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_posted_item_is_searchable_and_upsert_is_idempotent(client, factory: FactoryBundle):
    target = factory.user_embeddings[0] * 10  # far above every bundle item for user u0
    item = item_body(factory, "fresh", features_for(factory, target))
    for _ in range(2):
        response = client.post("/items", json={"items": [item]}, headers=AUTH)
        assert response.status_code == 200 and response.json()["upserted"] == 1
    assert index_size(client) == 201
    assert ids(client.get("/recommend/u0?k=3").json())[0] == "fresh"
    stored = client.get("/items/fresh").json()
    assert stored["source"] == "online"
    assert np.allclose(stored["features"]["image"], item["features"]["image"], atol=1e-5)
    assert client.get("/items/i1").json()["source"] == "bundle"
    assert client.get("/items/nope").status_code == 404


def test_batch_ingest_embeds_with_the_item_tower(client, factory: FactoryBundle):
    features = factory.random_features(64, seed=5)
    items = [item_body(factory, f"b{n}", row) for n, row in enumerate(features)]
    assert client.post("/items", json={"items": items}, headers=AUTH).status_code == 200
    history = ["b0", "b1"]
    body = client.post("/recommend", json={"history": history, "k": 10}).json()
    embeddings, states = factory.embed(features)
    vector = factory.user_vector([states[0], states[1]], None)
    extra = {f"b{n}": e for n, e in enumerate(embeddings)}
    assert ids(body) == brute_force(factory, vector, 10, exclude=history, extra=extra)
    assert body["source"] == "tower"


BAD_FEATURES = [
    ({"image": [0.0] * 12}, "missing modality 'audio'"),
    ({"audio": [0.0] * 8, "image": [0.0] * 12, "video": [1.0]}, "unknown modality 'video'"),
    ({"audio": [0.0] * 7, "image": [0.0] * 12}, "audio has 7 values, expected 8"),
    ({"audio": [0.0] * 8, "image": [0.0] * 13}, "image has 13 values, expected 12"),
    ({"audio": [1e39] + [0.0] * 7, "image": [0.0] * 12}, "float32 range"),
    ({"audio": ["x"] + [0.0] * 7, "image": [0.0] * 12}, "valid number"),
    ({"audio": None, "image": [0.0] * 12}, "valid list"),
]


@pytest.mark.parametrize(("features", "message"), BAD_FEATURES)
def test_invalid_features_get_422_and_change_nothing(client, features, message):
    good = {"item_id": "good", "features": {"audio": [0.0] * 8, "image": [0.0] * 12}}
    bad = {"item_id": "bad", "features": features}
    response = client.post("/items", json={"items": [good, bad]}, headers=AUTH)
    assert response.status_code == 422
    assert message in json.dumps(response.json())
    assert index_size(client) == 200  # the valid item of the batch was not written either
    assert client.get("/items/good").status_code == 404


RAW_BAD_BODIES = [
    ('{"items": [{"item_id": "n", "features": {"audio": [NaN, 0, 0, 0, 0, 0, 0, 0], '
     '"image": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}}]}', "finite number"),
    ('{"items": [{"item_id": "n", "features": {"audio": [Infinity, 0, 0, 0, 0, 0, 0, 0], '
     '"image": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}}]}', "finite number"),
    ('{"items": [{"item_id": "n", "features": {"audio": [1e999, 0, 0, 0, 0, 0, 0, 0], '
     '"image": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}}]}', "finite number"),
    ('{"items": []}', "at least 1 item"),
    ('{"items": [{"item_id": "", "features": {}}]}', "at least 1 character"),
    ('{"items": [{"item_id": "a/b", "features": {}}]}', "should match pattern"),
    ('{"items": [{"item_id": "a b", "features": {}}]}', "should match pattern"),
    ('{"items": [{"item_id": "x", "features": {}, "color": 1}]}', "Extra inputs"),
    ('{"items": [{"item_id": "x"}]}', "send the item's features or its text"),
    ('{"items": "nope"}', "valid list"),
]


@pytest.mark.parametrize(("raw", "message"), RAW_BAD_BODIES)
def test_malformed_item_bodies_get_422_with_the_reason(client, raw, message):
    headers = {**AUTH, "content-type": "application/json"}
    response = client.post("/items", content=raw, headers=headers)
    assert response.status_code == 422
    assert message in json.dumps(response.json())
    assert index_size(client) == 200


def test_duplicate_ids_and_oversized_batches_are_refused(make_settings, factory):
    with TestClient(create_app(make_settings(max_batch=3))) as client:
        row = factory.payload(factory.random_features(1)[0])
        twice = [{"item_id": "d", "features": row}, {"item_id": "d", "features": row}]
        response = client.post("/items", json={"items": twice}, headers=AUTH)
        assert response.status_code == 422 and "duplicate item_id 'd'" in response.text
        four = [{"item_id": f"e{n}", "features": row} for n in range(4)]
        response = client.post("/items", json={"items": four}, headers=AUTH)
        assert response.status_code == 422 and "exceeds the limit of 3" in response.text
        assert index_size(client) == 200


def test_invalid_recommend_and_interaction_requests_get_422_and_unknown_ids_404(client):
    for k in (0, -1, 1001, "many"):
        assert client.get(f"/recommend/u0?k={k}").status_code == 422
    response = client.post("/recommend", json={"history": ["i1", "ghost"]})
    assert response.status_code == 404 and "unknown item 'ghost' at history[1]" in response.text
    assert client.post("/recommend", json={"history": ["i1"], "k": 0}).status_code == 422
    response = client.post("/interactions", json={"user_id": "u0", "item_id": "ghost"},
                           headers=AUTH)
    assert response.status_code == 404 and "unknown item 'ghost'" in response.text
    response = client.post("/interactions", json={"user_id": "u0", "item_id": "i1", "ts": True},
                           headers=AUTH)
    assert response.status_code == 422  # a boolean is no timestamp
    response = client.post("/interactions", json={"user_id": "u0", "item_id": "i1", "ts": -5},
                           headers=AUTH)
    assert response.status_code == 422
    assert client.get("/recommend/u0").json()["source"] == "stored"  # nothing was logged


def test_interaction_updates_history_exclusions_and_vector(client, factory: FactoryBundle):
    first = client.get("/recommend/u1?k=10").json()
    top = ids(first)[0]
    response = client.post("/interactions", json={"user_id": "u1", "item_id": top}, headers=AUTH)
    assert response.status_code == 201
    after = client.get("/recommend/u1?k=10").json()
    assert after["source"] == "tower" and not after["cached"]
    assert top not in ids(after)
    history = factory.trained_items(1) + [top]
    states = [factory.item_states[factory.item_ids.index(i)] for i in history]
    expected = brute_force(factory, factory.user_vector(states, 1), 10, exclude=history)
    assert ids(after) == expected


def test_unknown_user_gets_404_or_popular_items_or_history_based(make_settings, factory, tmp_path):
    with TestClient(create_app(make_settings())) as client:
        response = client.get("/recommend/stranger")
        assert response.status_code == 404 and "unknown user 'stranger'" in response.text
        assert client.post("/recommend", json={"user_id": "stranger"}).status_code == 404
        body = client.post("/recommend", json={"history": ["i4"], "k": 5}).json()
        vector = factory.user_vector([factory.item_states[4]], None)
        assert ids(body) == brute_force(factory, vector, 5, exclude=["i4"])
        # a stranger with logged interactions is embedded by the tower (unknown-user path)
        client.post("/interactions", json={"user_id": "stranger", "item_id": "i4"}, headers=AUTH)
        body = client.get("/recommend/stranger?k=5").json()
        assert body["source"] == "tower" and ids(body) == brute_force(factory, vector, 5, ["i4"])
    other_store = f"sqlite:///{tmp_path / 'other.db'}"
    popular = make_settings(unknown_user="popular", database_url=other_store)
    with TestClient(create_app(popular)) as client:
        body = client.get("/recommend/stranger?k=5").json()
        counts = np.asarray(factory.interactions.sum(axis=0)).ravel()
        expected = [factory.item_ids[i] for i in np.argsort(-counts, kind="stable")[:5]]
        assert body["source"] == "popular" and ids(body) == expected


def test_post_recommend_for_known_user_adds_history_and_exclusions(client, factory):
    body = client.post("/recommend", json={"user_id": "u2", "history": ["i7"], "k": 8,
                                           "exclude": ["i9"]}).json()
    history = factory.trained_items(2) + ["i7"]
    states = [factory.item_states[factory.item_ids.index(i)] for i in history]
    vector = factory.user_vector(states, 2)
    assert ids(body) == brute_force(factory, vector, 8, exclude=history + ["i9"])
    stored = client.post("/recommend", json={"user_id": "u2", "exclude": ["i9"], "k": 8}).json()
    assert stored["source"] == "stored" and "i9" not in ids(stored)


def test_history_is_truncated_to_the_most_recent_items(make_settings, factory):
    with TestClient(create_app(make_settings(history_len=2))) as client:
        body = client.post("/recommend", json={"history": ["i1", "i2", "i3"], "k": 5}).json()
        vector = factory.user_vector([factory.item_states[2], factory.item_states[3]], None)
        assert ids(body) == brute_force(factory, vector, 5, exclude=["i1", "i2", "i3"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/items", {"items": [{"item_id": "x", "features": {}}]}),
        ("DELETE", "/items/i1", None),
        ("POST", "/interactions", {"user_id": "u0", "item_id": "i1"}),
        ("POST", "/admin/reload", None),
    ],
)
def test_mutating_endpoints_need_the_api_key(client, method, path, body):
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert "API key" in response.json()["detail"]
    assert index_size(client) == 200 and client.get("/items/i1").status_code == 200
    assert client.get("/recommend/u0").status_code == 200  # reads need no key


def test_no_api_key_configured_means_refused_writes(make_settings, factory):
    with TestClient(create_app(make_settings(api_key=None))) as client:
        for method, path, body in (("DELETE", "/items/i1", None),
                                   ("POST", "/interactions", {"user_id": "u0", "item_id": "i1"}),
                                   ("POST", "/admin/reload", None)):
            response = client.request(method, path, json=body)
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "forbidden"
            assert "RECSYS_API_KEY" in response.json()["detail"]
        assert client.get("/items/i1").status_code == 200  # nothing was deleted
        assert client.get("/recommend/u0").status_code == 200  # reads stay open


def test_open_writes_opens_writes_only_without_a_key(make_settings, factory):
    with TestClient(create_app(make_settings(api_key=None, open_writes=True))) as client:
        assert client.delete("/items/i1").status_code == 204
        assert client.get("/items/i1").status_code == 404
    with TestClient(create_app(make_settings(open_writes=True))) as client:  # a key is set
        assert client.delete("/items/i2").status_code == 401


def test_deleted_item_never_appears_again(client, factory: FactoryBundle):
    before = client.get("/recommend/u5?k=10").json()
    victim = ids(before)[0]
    assert client.delete(f"/items/{victim}", headers=AUTH).status_code == 204
    assert client.get(f"/items/{victim}").status_code == 404
    assert client.delete(f"/items/{victim}", headers=AUTH).status_code == 404
    after = client.get("/recommend/u5?k=10").json()
    assert victim not in ids(after)
    for user in factory.user_ids:
        assert victim not in ids(client.get(f"/recommend/{user}?k=50").json())
    body = client.post("/recommend", json={"history": ["i0"], "k": 199}).json()
    assert victim not in ids(body)
    response = client.post("/recommend", json={"history": [victim]})
    assert response.status_code == 404  # a deleted item is unknown


@pytest.mark.skipif(not redis_reachable(), reason="local Redis is not reachable")
@pytest.mark.parametrize(("local_items", "layer"), [(1000, "memory"), (0, "redis")])
def test_cache_hits_and_every_staleness_rule(make_settings, factory: FactoryBundle, tmp_path,
                                              local_items, layer):
    with TestClient(create_app(make_settings(local_cache_items=local_items))) as client:
        check_cache_rules(client, factory, tmp_path, layer)


def check_cache_rules(client: TestClient, factory: FactoryBundle, tmp_path, layer: str) -> None:
    first = client.get("/recommend/u6?k=10").json()
    second = client.get("/recommend/u6?k=10").json()
    assert not first["cached"] and second["cached"] and ids(first) == ids(second)
    assert not client.get("/recommend/u6?k=11").json()["cached"]  # k is part of the key

    # a delete: the cached list contained the victim; it must not be served again
    victim = ids(second)[3]
    client.delete(f"/items/{victim}", headers=AUTH)
    after_delete = client.get("/recommend/u6?k=10").json()
    assert not after_delete["cached"] and victim not in ids(after_delete)
    assert client.get("/recommend/u6?k=10").json()["cached"]

    # the user's new interaction: next answer reflects it
    client.post("/interactions", json={"user_id": "u6", "item_id": ids(after_delete)[0]},
                headers=AUTH)
    after_event = client.get("/recommend/u6?k=10").json()
    assert not after_event["cached"] and ids(after_delete)[0] not in ids(after_event)

    # POST /recommend is cached by its whole request
    request = {"history": ["i1", "i2"], "k": 5}
    assert not client.post("/recommend", json=request).json()["cached"]
    assert client.post("/recommend", json=request).json()["cached"]
    assert not client.post("/recommend", json={**request, "exclude": ["i3"]}).json()["cached"]

    # a new bundle: a new version never serves the old version's lists
    from bundle.testing import make_bundle

    make_bundle(tmp_path / "v2", version="v2", seed=1)
    reload = client.post("/admin/reload", json={"bundle": str(tmp_path / "v2")}, headers=AUTH)
    assert reload.status_code == 200
    fresh = client.get("/recommend/u6?k=10").json()
    assert fresh["model_version"] == "v2" and not fresh["cached"]
    metrics = client.get("/metrics").text
    assert f'recsys_cache_requests_total{{layer="{layer}",result="hit"}}' in metrics


def test_service_answers_without_redis(make_settings, factory):
    with TestClient(create_app(make_settings(redis_url="", local_cache_items=0))) as client:
        assert client.get("/readyz").json()["redis"] == "disabled"
        for _ in range(2):
            assert not client.get("/recommend/u0").json()["cached"]


def test_memory_layer_caches_without_redis(make_settings, factory):
    with TestClient(create_app(make_settings(redis_url=""))) as client:
        first, second = (client.get("/recommend/u0?k=7").json() for _ in range(2))
        assert not first["cached"] and second["cached"]
        assert {**first, "cached": True} == second  # the whole body, as computed
        metrics = client.get("/metrics").text
        assert 'recsys_cache_requests_total{layer="memory",result="hit"} 1.0' in metrics
        assert 'recsys_cache_requests_total{layer="none",result="bypass"} 1.0' in metrics


def test_openapi_describes_every_field(client):
    schema = client.get("/openapi.json").json()
    missing = [
        f"{name}.{field}"
        for name, component in schema["components"]["schemas"].items()
        if not name.startswith(("HTTPValidationError", "ValidationError"))
        for field, spec in component.get("properties", {}).items()
        if "description" not in spec
    ]
    assert not missing, missing
    assert client.get("/docs").status_code == 200
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]


@pytest.mark.parametrize("index_type", ["ivf", "ivfpq", "hnsw"])
def test_approximate_index_types_serve_the_same_api(make_settings, factory, index_type):
    settings = make_settings(index_type=index_type, redis_url="", local_cache_items=0,
                             index_recall=0.99)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert ready["index_type"] == index_type and ready["index_device"] == "cpu"
        plan = ready["index"]  # calibrated on the bundle's users; 200 items train 2-bit codes
        assert plan["kind"] == index_type and plan["recall_target"] == 0.99
        assert plan["recall"] >= (0.99 if index_type != "ivfpq" else 0.5)
        body = client.get("/recommend/u3?k=10").json()
        exact = brute_force(factory, factory.user_embeddings[3], 10, factory.trained_items(3))
        if index_type != "ivfpq":  # the codes' recall: test_service_index
            assert len(set(ids(body)) & set(exact)) >= 9  # small catalog: near-exact
        target = factory.user_embeddings[3] * 10
        item = item_body(factory, "fresh", features_for(factory, target))
        client.post("/items", json={"items": [item]}, headers=AUTH)
        assert ids(client.get("/recommend/u3?k=10").json())[0] == "fresh"
        client.delete("/items/fresh", headers=AUTH)
        assert "fresh" not in ids(client.get("/recommend/u3?k=10").json())


def test_oversized_bodies_get_413_before_parsing(make_settings):
    with TestClient(create_app(make_settings(max_body_bytes=4096))) as client:
        body = b'{"items": [' + b"1," * 5000 + b"1]}"
        declared = client.post("/items", content=body, headers={**AUTH, "content-type":
                                                                "application/json"})
        assert declared.status_code == 413 and "4096 bytes" in declared.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b" " * 1000

        chunked = client.post("/recommend", content=chunks(),
                              headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert client.post("/recommend", json={"history": ["i1"], "k": 3}).status_code == 200


def test_method_json_and_empty_body_errors_say_what_is_wrong(client):
    response = client.put("/items/i1")
    assert response.status_code == 405 and response.headers["allow"] == "DELETE, GET, HEAD"
    for path, raw in (("/recommend", b"{not json"), ("/items", b'{"items": [')):
        bad = client.post(path, content=raw, headers={**AUTH, "content-type": "application/json"})
        assert bad.status_code == 400, path  # as the OpenAPI documents
        assert "not valid JSON" in bad.json()["detail"] and "position" in bad.json()["detail"]
    empty = client.post("/recommend", json={})
    assert empty.status_code == 422 and "user_id" in empty.text


def test_docs_examples_are_valid_for_the_served_bundle(client, factory):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    features = components["ItemIn"]["properties"]["features"]["examples"][0]
    assert {name: len(v) for name, v in features.items()} == dict(factory.modalities)
    item = {"item_id": components["ItemIn"]["properties"]["item_id"]["examples"][0],
            "features": features}
    assert client.post("/items", json={"items": [item]}, headers=AUTH).status_code == 200
    history = components["RecommendIn"]["properties"]["history"]["examples"][0]
    assert client.post("/recommend", json={"history": history, "k": 5}).status_code == 200
    user = components["RecommendIn"]["properties"]["user_id"]["examples"][0]
    assert client.get(f"/recommend/{user}").status_code == 200
    interaction = {"user_id": user,
                   "item_id": components["InteractionIn"]["properties"]["item_id"]["examples"][0]}
    assert client.post("/interactions", json=interaction, headers=AUTH).status_code == 201
