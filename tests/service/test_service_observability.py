"""Request ids, error codes, structured log lines, per-stage latency and the metrics' shape."""

from __future__ import annotations

import json

import pytest
import structlog
from fastapi.testclient import TestClient

from bundle.testing import FactoryBundle
from service.app import create_app
from service.middleware import incoming_request_id, recommendation_fields
from tests.service.conftest import AUTH
from tests.service.helpers import item_body


def _requests(logs: list[dict]) -> list[dict]:
    return [line for line in logs if line["event"] == "request"]


@pytest.mark.parametrize("given", ["abc-123", "0af7651916cd43dd8448eb211c80319c",
                                   "trace:1/span=2", "a" * 128])
def test_a_sane_request_id_is_returned_as_sent(client, given):
    response = client.get("/recommend/u1", headers={"X-Request-ID": given})
    assert response.status_code == 200 and response.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["", "a" * 129, "two words", "semi;colon", "é"])
def test_an_insane_request_id_is_replaced(client, given):
    response = client.get("/healthz", headers={"X-Request-ID": given.encode()})
    assert response.headers["x-request-id"] != given
    assert len(response.headers["x-request-id"]) == 32


def test_every_response_gets_its_own_request_id(client):
    paths = ["/healthz", "/readyz", "/metrics", "/recommend/u1", "/recommend/nobody", "/nowhere",
             "/items/nothing"]
    seen = {client.get(path).headers["x-request-id"] for path in paths}
    seen.add(client.head("/recommend/u1").headers["x-request-id"])
    seen.add(client.post("/items", content=b"x" * 9_000_000).headers["x-request-id"])
    assert len(seen) == len(paths) + 2 and all(len(s) == 32 for s in seen)


def test_request_id_parsing():
    assert incoming_request_id([(b"host", b"x"), (b"x-request-id", b"r-1")]) == "r-1"
    assert incoming_request_id([(b"host", b"x")]) is None
    assert incoming_request_id([(b"x-request-id", b"<script>")]) is None


def test_errors_carry_a_stable_code(client, make_settings):
    def code(response, status):
        assert response.status_code == status, response.text
        assert isinstance(response.json()["detail"], str | list) and response.json()["detail"]
        return response.json()["code"]

    assert code(client.get("/recommend/nobody"), 404) == "not_found"
    assert code(client.get("/nowhere"), 404) == "not_found"
    assert code(client.get("/recommend/u1?k=0"), 422) == "validation_error"
    assert code(client.post("/recommend", json={"history": ["i1"], "k": 5, "user_id": 3}),
                422) == "validation_error"
    assert code(client.post("/recommend", content=b"{", headers={"content-type":
                                                                "application/json"}),
                400) == "invalid_json"
    assert code(client.post("/items", json={"items": []}, headers=AUTH), 422) \
        == "validation_error"
    assert code(client.post("/items", content=b"x" * 9_000_000), 413) == "payload_too_large"
    assert code(client.delete("/items/i1"), 401) == "unauthorized"
    assert code(client.put("/items/i1"), 405) == "method_not_allowed"
    assert code(client.post("/admin/reload", json={"bundle": "/etc"}, headers=AUTH),
                403) == "forbidden"
    assert code(client.post("/admin/reload", json={"bundle": str(client.app.state.settings
                                                                 .reload_boundary())},
                            headers=AUTH), 422) == "load_failed"
    with TestClient(create_app(make_settings(bundle="/nonexistent"))) as unready:
        assert code(unready.get("/recommend/u1"), 503) == "not_ready"


def test_a_domain_422_says_invalid(client, factory: FactoryBundle):
    body = {"items": [item_body(factory, "x1", factory.features[0])] * 2}
    response = client.post("/items", json=body, headers=AUTH)
    assert response.status_code == 422 and response.json()["code"] == "invalid", response.text


def test_an_unhandled_error_is_a_json_500_with_the_request_id(make_settings, monkeypatch):
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as client:
        service = client.app.state.service
        monkeypatch.setattr(service, "get_item", lambda item_id: 1 / 0)
        with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
            response = client.get("/items/i1", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "boom-1"
    assert response.json() == {"detail": "internal server error", "code": "internal_error"}
    (line,) = _requests(logs)
    assert line["status"] == 500 and line["log_level"] == "error"
    assert line["request_id"] == "boom-1" and isinstance(line["exc_info"], ZeroDivisionError)


def test_one_log_line_per_request_with_route_latency_and_source(client):
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        miss = client.get("/recommend/u3?k=4", headers={"X-Request-ID": "req-miss"})
        hit = client.get("/recommend/u3?k=4", headers={"X-Request-ID": "req-hit"})
        tower = client.post("/recommend", json={"history": ["i1", "i2"], "k": 3})
        client.get("/recommend/nobody")
        client.get("/healthz")
    assert hit.json()["cached"] and not miss.json()["cached"]
    lines = _requests(logs)
    assert [(line["method"], line["route"], line["status"]) for line in lines] == [
        ("GET", "/recommend/{user_id}", 200), ("GET", "/recommend/{user_id}", 200),
        ("POST", "/recommend", 200), ("GET", "/recommend/{user_id}", 404),
        ("GET", "/healthz", 200)]
    assert [line["request_id"] for line in lines[:2]] == ["req-miss", "req-hit"]
    assert lines[2]["request_id"] == tower.headers["x-request-id"]
    assert [(line.get("source"), line.get("cache_hit")) for line in lines] == [
        ("stored", False), ("stored", True), ("tower", False), (None, None), (None, None)]
    assert all(line["model_version"] == "v1" for line in lines)
    assert all(isinstance(line["latency_ms"], float) and line["latency_ms"] > 0 for line in lines)


def test_recommendation_fields_read_the_body_tail():
    body = (b'{"user_id":"u\\",\\"model_version\\":\\"x","items":[{"item_id":"a","score":1.0}],'
            b'"model_version":"v7","cached":true,"source":"popular"}')
    assert recommendation_fields(body) == ("v7", "popular", True)
    assert recommendation_fields(b'{"detail":"x"}') is None


def test_writes_log_one_line_each_with_counts_not_ids(client, factory: FactoryBundle):
    items = [item_body(factory, f"log-{n}", factory.features[n]) for n in range(3)]
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        upsert = client.post("/items", json={"items": items},
                             headers={**AUTH, "X-Request-ID": "w-1"})
        client.delete("/items/log-0", headers={**AUTH, "X-Request-ID": "w-2"})
        client.post("/interactions", json={"user_id": "u1", "item_id": "i2"},
                    headers={**AUTH, "X-Request-ID": "w-3"})
    assert upsert.status_code == 200, upsert.text
    writes = [line for line in logs if line["event"] != "request"]
    assert [(w["event"], w["count"], w["request_id"], w["model_version"]) for w in writes] == [
        ("items_upserted", 3, "w-1", "v1"), ("items_deleted", 1, "w-2", "v1"),
        ("interactions_logged", 1, "w-3", "v1")]
    assert "log-1" not in json.dumps([{k: str(v) for k, v in w.items()} for w in writes])


def _samples(client, name: str) -> dict[str, float]:
    text = client.get("/metrics").text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(name)}


def test_per_stage_latency_of_the_miss_path_and_writes(client, factory: FactoryBundle):
    client.get("/recommend/u4?k=5")  # a miss: stored vector, FAISS
    client.post("/recommend", json={"history": ["i3"], "k": 5})  # the user tower, FAISS
    client.post("/items", json={"items": [item_body(factory, "st-1", factory.features[1])]},
                headers=AUTH)  # the item tower, the store
    counts = _samples(client, "recsys_stage_seconds_count")
    assert counts['recsys_stage_seconds_count{stage="faiss"}'] >= 2
    assert counts['recsys_stage_seconds_count{stage="user_tower"}'] >= 1
    assert counts['recsys_stage_seconds_count{stage="item_tower"}'] >= 1
    assert counts['recsys_stage_seconds_count{stage="store"}'] >= 1
    if client.app.state.settings.redis_url:  # one MGET and one write per miss batch
        assert counts['recsys_stage_seconds_count{stage="redis"}'] >= 4
    sums = _samples(client, "recsys_stage_seconds_sum")
    assert sums['recsys_stage_seconds_sum{stage="faiss"}'] > 0


def test_no_created_series_and_readiness_is_a_metric(client):
    text = client.get("/metrics").text
    assert "_created" not in text
    client.get("/readyz")
    assert _samples(client, "recsys_ready") == {"recsys_ready": 1.0}


def test_live_json_logs_carry_the_request_id_on_every_line(live_server, factory: FactoryBundle):
    server = live_server()
    import httpx

    item = item_body(factory, "live-1", factory.features[2])
    response = httpx.post(f"{server.url}/items", json={"items": [item]},
                          headers={**AUTH, "X-Request-ID": "live-req-1"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "live-req-1"
    httpx.get(f"{server.url}/recommend/u2", headers={"X-Request-ID": "live-req-2"})
    server.stop()
    lines = [json.loads(line) for line in server.log.read_text().splitlines()]  # all JSON
    mine = [line for line in lines if line.get("request_id") == "live-req-1"]
    assert [line["event"] for line in mine] == ["items_upserted", "request"]
    assert mine[1]["route"] == "/items" and mine[1]["status"] == 200 and mine[0]["count"] == 1
    (rec,) = [line for line in lines if line.get("request_id") == "live-req-2"]
    assert rec["source"] == "stored" and rec["cache_hit"] is False and "ts" in rec
    assert not [line for line in lines if '"GET /' in line["event"]]  # no uvicorn access log
