"""/docs, /redoc and /ui: assets served by the service itself, readable summaries, examples that
succeed against the served bundle and change nothing a user would miss, the last retrain
decision read-only. (Rendered in a real browser, offline: ``test_service_browser.py``.)"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from bundle.testing import make_bundle
from service.app import create_app
from service.openapi import EXAMPLE_ITEM, EXAMPLE_USER
from service.routes.ui import STATIC
from tests.service.conftest import AUTH, ROOT
from tests.service.docs_examples import example_requests, run_examples, snapshot

LINKS = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


def test_docs_and_redoc_load_every_asset_from_the_service(client):
    for page, script, marker in (("/docs", "swagger-ui-bundle.js", "SwaggerUIBundle"),
                                 ("/redoc", "redoc.standalone.js", "Redoc")):
        html = client.get(page).text
        assert "http://" not in html and "https://" not in html, page  # no CDN, no fonts
        links = LINKS.findall(html)
        assert f"/docs/assets/{script}" in links, (page, links)
        for link in links:
            asset = client.get(link)
            assert asset.status_code == 200 and len(asset.content) > 1000, link
        assert marker in client.get(f"/docs/assets/{script}").text
        assert "/openapi.json" in html
    assert '"validatorUrl": null' in client.get("/docs").text  # no badge from swagger.io


def test_every_operation_has_a_readable_summary_and_a_described_tag(client):
    routes = [r for r in client.app.routes if isinstance(r, APIRoute) and r.include_in_schema]
    assert [r.path for r in routes if not r.summary] == []  # never the function's name
    schema = client.get("/openapi.json").json()
    summaries = {(m, p): op["summary"] for p, ops in schema["paths"].items()
                 for m, op in ops.items()}
    assert summaries[("get", "/healthz")] == "Health check"
    assert summaries[("get", "/recommend/{user_id}")] == "Recommend for a user"
    assert summaries[("post", "/admin/reload")] == "Reload the bundle"
    described = {tag["name"] for tag in schema["tags"] if tag.get("description")}
    used = {t for ops in schema["paths"].values() for op in ops.values() for t in op["tags"]}
    assert used <= described


def test_the_write_examples_touch_only_the_example_item_and_user(client, factory):
    schema = client.get("/openapi.json").json()
    writes = {(m, url.split("?")[0]): body for m, url, body in example_requests(schema)
              if m != "get"}
    assert writes[("delete", f"/items/{EXAMPLE_ITEM}")] is None  # never a catalogue item
    assert writes[("post", "/interactions")] == {"user_id": EXAMPLE_USER,
                                                 "item_id": EXAMPLE_ITEM}
    assert [item["item_id"] for item in writes[("post", "/items")]["items"]] == [EXAMPLE_ITEM]
    assert {EXAMPLE_ITEM, EXAMPLE_USER}.isdisjoint({*factory.item_ids, *factory.user_ids})
    # a real reload: the folder the service serves, not {"bundle": "string"}
    assert writes[("post", "/admin/reload")] == {"bundle": str(factory.path)}
    components = schema["components"]["schemas"]
    assert components["InteractionIn"]["properties"]["user_id"]["examples"] == [EXAMPLE_USER]


def test_every_docs_example_succeeds_and_changes_nothing_a_user_would_miss(client, factory):
    schema = client.get("/openapi.json").json()
    before = snapshot(client, factory.user_ids, factory.item_ids)
    done = run_examples(client, schema, AUTH)
    failed = [(m, url, status) for m, url, status in done if status >= 300]
    assert failed == []
    assert {m for m, _, _ in done} == {"GET", "POST", "DELETE"}
    assert len(done) == sum(len(ops) for ops in schema["paths"].values())
    assert snapshot(client, factory.user_ids, factory.item_ids) == before
    assert client.get(f"/items/{EXAMPLE_ITEM}").status_code == 404  # nothing left behind


def test_the_ui_page_and_its_files_are_served_and_name_no_other_host(client):
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for link in LINKS.findall(page.text):
        if not link.startswith(("data:", "docs", "redoc")):
            assert client.get(f"/{link}").status_code == 200, link
    for path in STATIC.iterdir():
        assert not re.search(r"https?://", path.read_text()), path.name
    assert client.get("/ui/static/nothing.js").status_code == 404
    model = client.get("/ui/model").json()
    assert model["model_version"] == "v1" and model["text_items"] is False
    assert model["sample_users"][0] == "u0" and model["last_retrain"] is None


def test_the_ui_files_are_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["service"]
    files = [p.relative_to(ROOT / "service").as_posix() for p in STATIC.iterdir()]
    assert {"ui/index.html", "ui/app.js", "ui/style.css"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)] == []


def _gate(root: Path, **decision) -> Path:
    (root / "gate").mkdir(parents=True, exist_ok=True)
    path = root / "gate" / "gate.json"
    path.write_text(json.dumps({
        "accepted": False, "reasons": ["valid recall@20 0.0100 is worse than live 0.0200"],
        "metric": "recall@20", "tolerance": 0.05, "valid": {"candidate": 0.01, "live": 0.02},
        "holdout": {"rows": 0}, "live_version": "v1", "published": None, "run": "r1",
        "candidate": str(root / "candidates" / "r1"), "data": {"users": 3}, **decision}))
    return path


def test_the_last_retrain_decision_is_read_from_the_bundles_root(tmp_path, make_settings):
    root = tmp_path / "bundles"
    make_bundle(root / "versions" / "v1")
    (root / "current").symlink_to(Path("versions") / "v1")
    for served in (root / "current", root / "versions" / "v1"):
        settings = make_settings(bundle=served, reload_root=root)
        with TestClient(create_app(settings)) as client:
            assert client.get("/ui/model").json()["last_retrain"] is None
            _gate(root)
            response = client.get("/ui/model")
            decision = response.json()["last_retrain"]
            assert decision["accepted"] is False and decision["run"] == "r1"
            assert decision["reasons"][0].startswith("valid recall@20 0.0100")
            assert decision["finished_at"] > 0
            assert str(tmp_path) not in response.text  # no server path (gate's "candidate")
            _gate(root, accepted=True, reasons=[], published="v2")
            decision = client.get("/ui/model").json()["last_retrain"]
            assert decision["accepted"] is True and decision["published"] == "v2"
            (root / "gate" / "gate.json").write_text("{half a decis")
            assert client.get("/ui/model").json()["last_retrain"] is None
            (root / "gate" / "gate.json").unlink()
