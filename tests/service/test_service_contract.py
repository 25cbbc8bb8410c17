"""What the service promises probes and clients: /readyz tells the truth (with a reason), HEAD
wherever GET is, and the OpenAPI schema and the validators agree on ids and feature values."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

import bundle as bundle_format
from bundle.testing import FactoryBundle, make_bundle
from service.app import create_app
from service.schemas import FLOAT32_MAX, ID_PATTERN, ItemIn, UserId
from tests.service.conftest import AUTH

# ---- /readyz ----------------------------------------------------------------------------


def _point(link: Path, target: Path) -> None:
    """Move a ``current`` link atomically, as a publish or a rollback does."""
    staged = link.with_name(f".{link.name}.new")
    staged.unlink(missing_ok=True)
    os.symlink(target, staged)
    os.replace(staged, link)


def _wait_readyz(client: TestClient, status: int, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response.json()
        time.sleep(0.02)


def test_readyz_says_why_nothing_is_served(make_settings, tmp_path):
    with TestClient(create_app(make_settings(bundle=tmp_path / "nothing"))) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["ready"] is False and body["model_version"] is None
        assert body["reason"].startswith("no bundle loaded: cannot load bundle")
        assert "nothing" in body["reason"]


def test_readyz_turns_503_when_the_link_names_a_refused_bundle_past_the_grace(
    make_settings, factory: FactoryBundle, tmp_path
):
    root = tmp_path / "bundles"
    good = make_bundle(root / "v1", version="v1").path
    broken = make_bundle(root / "v3", version="v3", seed=2).path
    np.save(broken / bundle_format.ITEM_EMBEDDINGS, np.zeros((200, 16), np.float32))
    link = root / "current"
    _point(link, good)
    grace = 1.0
    settings = make_settings(bundle=link, bundle_poll_s=0.05, bundle_failure_grace_s=grace)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert ready["ready"] and ready["reason"] is None and ready["model_version"] == "v1"
        _point(link, broken)
        refused_at = time.monotonic()
        # inside the grace: still ready (the old bundle is served), the reason already says so
        body = client.get("/readyz").json()
        while body["reason"] is None and time.monotonic() - refused_at < 2:
            body = client.get("/readyz").json()
        assert body["ready"] is True and body["model_version"] == "v1"
        assert "names v3, which failed to load" in body["reason"]
        assert "within the 1 s grace" in body["reason"]
        assert client.get("/recommend/u1?k=3").json()["model_version"] == "v1"
        # past it: 503, with the reason
        body = _wait_readyz(client, 503)
        assert time.monotonic() - refused_at >= grace
        assert body["ready"] is False and body["model_version"] == "v1"
        assert "past the 1 s grace" in body["reason"] and "RECSYS_BUNDLE_FAILURE_GRACE_S" in \
            body["reason"]
        assert client.head("/readyz").status_code == 503
        assert client.get("/recommend/u1?k=3").status_code == 200  # it still serves
        # a rollback (the link moves back) makes it ready again
        _point(link, good)
        body = _wait_readyz(client, 200)
        assert body["reason"] is None and body["model_version"] == "v1"


def test_a_manual_reload_overrides_a_refused_link(make_settings, factory, tmp_path):
    root = tmp_path / "bundles"
    broken = make_bundle(root / "v3", version="v3", seed=2).path
    (broken / bundle_format.MANIFEST).write_text("{")
    link = root / "current"
    _point(link, factory.path)
    settings = make_settings(bundle=link, bundle_poll_s=0.05, bundle_failure_grace_s=0)
    with TestClient(create_app(settings)) as client:
        _point(link, broken)
        assert "names v3" in _wait_readyz(client, 503)["reason"]
        v2 = make_bundle(tmp_path / "v2", version="v2", seed=1)
        reload = client.post("/admin/reload", json={"bundle": str(v2.path)}, headers=AUTH)
        assert reload.status_code == 200
        body = client.get("/readyz").json()
        assert body["ready"] and body["reason"] is None and body["model_version"] == "v2"


# ---- HEAD -------------------------------------------------------------------------------


def test_head_is_answered_wherever_get_is(client):
    paths = [path for path, operations in client.get("/openapi.json").json()["paths"].items()
             if "get" in operations and "{" not in path]
    paths += ["/recommend/u1", "/items/i1", "/docs", "/redoc", "/openapi.json"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
    for path in paths:
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if path != "/metrics":  # the metrics grow with every request
            assert abs(int(head.headers["content-length"]) - len(get.content)) <= 1, path
    assert client.head("/recommend/nobody").status_code == 404
    assert 'method="HEAD",route="/healthz",status="200"' in client.get("/metrics").text


def test_allow_lists_head_beside_get_and_head_is_405_where_get_is(client):
    for method, path, allow in (("put", "/healthz", "GET, HEAD"),
                                ("put", "/items/i1", "DELETE, GET, HEAD"),
                                ("head", "/interactions", "POST"),
                                ("head", "/admin/reload", "POST")):
        response = client.request(method, path, headers=AUTH)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allow, (method, path)


# ---- the schema and the validators agree --------------------------------------------------


def test_feature_values_beyond_float32_are_refused_and_the_schema_says_so(client, factory):
    assert float(np.finfo(np.float32).max) == FLOAT32_MAX
    features = client.get("/openapi.json").json()["components"]["schemas"]["ItemIn"][
        "properties"]["features"]
    for name, _dim in factory.modalities:
        number = features["properties"][name]["items"]
        assert (number["minimum"], number["maximum"]) == (-FLOAT32_MAX, FLOAT32_MAX), name
    # the exact case of the issue: 3.5e38 is a finite JSON number beyond the schema's maximum
    zeros = {name: [0.0] * dim for name, dim in factory.modalities}
    for value in (3.5e38, -3.5e38, 3.4028235e38, 10**39):
        audio = [value] + [0.0] * (dict(factory.modalities)["audio"] - 1)
        item = {"item_id": "big", "features": {**zeros, "audio": audio}}
        response = client.post("/items", json={"items": [item]}, headers=AUTH)
        assert response.status_code == 422, value
        assert "outside the float32 range" in response.text
    # the bound itself, which the schema allows, passes the request validation (this bundle's
    # tower then refuses it: too large for its weights, a bundle rule); a value it can take is in
    edge = {**zeros, "audio": [FLOAT32_MAX, -FLOAT32_MAX] + [0.0] * 6}
    assert ItemIn.model_validate({"item_id": "edge", "features": edge}).features == edge
    response = client.post("/items", json={"items": [{"item_id": "edge", "features": edge}]},
                           headers=AUTH)
    assert response.status_code == 422 and "float32" not in response.text
    assert "embedding beyond" in response.text
    fine = {**zeros, "audio": [1e6, -1e6] + [0.0] * 6}
    response = client.post("/items", json={"items": [{"item_id": "fine", "features": fine}]},
                           headers=AUTH)
    assert response.status_code == 200, response.text


def test_the_id_pattern_the_schema_shows_is_the_one_validated(client):
    schema = client.get("/openapi.json").json()
    shown = {schema["components"]["schemas"][name]["properties"]["item_id"]["pattern"]
             for name in ("ItemIn", "InteractionIn")}
    assert shown == {ID_PATTERN}
    # no engine-dependent classes: \s, \S, \w, \d, \b or an unescaped '.'
    assert not re.search(r"\\[sSwWdDbB]|(?<!\\)\.", ID_PATTERN)


# U+0085 (NEL) is whitespace to Python and pydantic's Rust regex, not to ECMA-262's \s: the
# schema accepted it and the service refused it. Every character any engine calls whitespace
# or control is now refused by all of them; everything else is an id character for all.
REFUSED = ({*range(0x21), *range(0x7F, 0xA1), ord("/"), 0x1680, *range(0x2000, 0x200B), 0x2028,
            0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF})
BMP = [c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]


def _pydantic_accepts(text: str) -> bool:
    try:
        TypeAdapter(UserId).validate_python(text)
        return True
    except ValidationError:
        return False


def test_ids_with_u0085_are_refused_by_the_schema_and_the_service_alike(client):
    for user in ("a\x85b", "a\u2028b", "a\ufeffb", "a\x1cb"):
        response = client.post("/interactions", json={"user_id": user, "item_id": "i1"},
                               headers=AUTH)
        assert response.status_code == 422, repr(user)
        assert "should match pattern" in response.text
        assert re.fullmatch(ID_PATTERN, user) is None, repr(user)
    assert client.post("/interactions", json={"user_id": "\xa1b\u00e9\U0001f600",
                                              "item_id": "i1"}, headers=AUTH).status_code == 201


def test_python_and_pydantic_read_the_id_pattern_alike_for_every_character():
    python = re.compile(ID_PATTERN)
    for code in [*BMP, 0x10000, 0x1F600, 0x10FFFF]:
        char = f"a{chr(code)}b"
        expected = code not in REFUSED
        assert (python.fullmatch(char) is not None) == expected, hex(code)
        assert _pydantic_accepts(char) == expected, hex(code)


@pytest.mark.skipif(shutil.which("node") is None, reason="node (an ECMA-262 engine) is absent")
def test_the_schema_engine_reads_the_id_pattern_like_the_service():
    """ECMA-262 (the schema's regex dialect, run by node), with and without the u flag."""
    script = (
        "const p = JSON.parse(process.argv[1]); const out = {};"
        "for (const flags of ['', 'u']) { const r = new RegExp(p, flags); const refused = [];"
        "  for (let c = 0; c < 0x10000; c++) { if (c >= 0xD800 && c <= 0xDFFF) continue;"
        "    if (!r.test('a' + String.fromCodePoint(c) + 'b')) refused.push(c); }"
        "  if (!r.test('a\\u{1F600}b')) refused.push(0x1F600);"
        "  out[flags || 'plain'] = refused; }"
        "console.log(JSON.stringify(out));")
    run = subprocess.run(["node", "-e", script, json.dumps(ID_PATTERN)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for flags, refused in json.loads(run.stdout).items():
        assert set(refused) == REFUSED, flags


def test_features_that_overflow_the_tower_are_refused_and_lists_stay_json(client, factory):
    """Inside the float32 range yet too large for the tower: an item that would rank with an
    infinite score for every user (and print as Infinity, which is not JSON) is refused."""
    huge = {name: [1e30] * dim for name, dim in factory.modalities}
    response = client.post("/items", json={"items": [{"item_id": "huge", "features": huge}]},
                           headers=AUTH)
    assert response.status_code == 422 and "embedding beyond" in response.text
    listed = client.get("/recommend/u1?k=50")
    assert listed.status_code == 200 and "Infinity" not in listed.text
    assert "huge" not in {entry["item_id"] for entry in listed.json()["items"]}
