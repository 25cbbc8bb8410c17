"""/docs, /redoc and /ui in a real headless Chromium (Debian's ``chromium`` package, driven by
Playwright with the system executable: no browser download) against a real ``python -m
service``, with every request that leaves 127.0.0.1 aborted and counted: the pages must render
and work with no network. Also runs every /docs example against the served bundle over HTTP.

Screenshots go to ``tmp_path``, and to ``docs/`` when a file there is missing or
``UPDATE_SCREENSHOTS=1`` (so a run does not rewrite the committed ones).
Skipped, with the reason, when chromium or playwright is not installed (CI: ``apt-get install
-y chromium``; playwright comes with the dev extra)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bundle.testing import make_bundle
from service.openapi import EXAMPLE_ITEM
from tests.service.conftest import API_KEY, AUTH, ROOT
from tests.service.docs_examples import run_examples, snapshot

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"no chromium at {CHROMIUM} (apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
TITLE = "Multimodal recommendation service"
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture
def served(tmp_path: Path, live_server):
    """A bundles root as the nightly job leaves it (versions/v1, current, gate/gate.json) with
    a reserved new-item share, served uncached (a new item shows in the next answer)."""
    root = tmp_path / "bundles"
    factory = make_bundle(root / "versions" / "v1", new_items=[], new_item_slots=0.1)
    (root / "current").symlink_to(Path("versions") / "v1")
    (root / "gate").mkdir()
    (root / "gate" / "gate.json").write_text(json.dumps({
        "accepted": True, "reasons": [], "metric": "recall@20", "tolerance": 0.05,
        "valid": {"candidate": 0.12, "live": 0.11}, "holdout": {"rows": 0},
        "live_version": "v0", "published": "v1", "run": "20260101T020000",
        "candidate": str(root / "versions" / "v1")}))
    server = live_server(RECSYS_BUNDLE=str(root / "current"), RECSYS_REDIS_URL="",
                         RECSYS_LOCAL_CACHE_ITEMS="0")
    return server, factory


def _shoot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    target = ROOT / "docs" / name
    if not target.exists() or os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(tmp_path / name, target)


def test_docs_redoc_and_ui_render_and_work_offline(served, tmp_path: Path):
    server, factory = served
    with httpx.Client(base_url=server.url, timeout=30) as client:
        schema = client.get("/openapi.json").json()
        before = snapshot(client, factory.user_ids, factory.item_ids)
        done = run_examples(client, schema, AUTH)
        assert [d for d in done if d[2] >= 300] == []
        assert snapshot(client, factory.user_ids, factory.item_ids) == before
        assert client.get(f"/items/{EXAMPLE_ITEM}").status_code == 404
    operations = sum(len(ops) for ops in schema["paths"].values())

    left, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(20_000)

        def only_local(route) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                left.append(route.request.url)
                route.abort()

        context.route("**/*", only_local)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))

        # Swagger UI: every operation listed, and "Try it out" works
        page.goto(f"{server.url}/docs")
        page.wait_for_selector(".opblock-summary")
        assert page.locator(".opblock").count() == operations
        assert TITLE in page.locator(".info .title").first.inner_text()
        assert page.get_by_text("Recommend for a user").count() >= 1
        _shoot(page, tmp_path, "api-docs.png")
        healthz = page.locator(".opblock-get", has_text="/healthz")
        healthz.locator(".opblock-summary").click()
        healthz.get_by_role("button", name="Try it out").click()
        healthz.get_by_role("button", name="Execute").click()
        status = healthz.locator(".live-responses-table tbody .response-col_status").first
        assert status.inner_text().strip() == "200"

        # ReDoc: the title and the operations' summaries
        page.goto(f"{server.url}/redoc")
        page.wait_for_selector("h1")
        assert TITLE in page.locator("h1").first.inner_text()
        assert page.get_by_text("Recommend for a user").count() >= 1
        _shoot(page, tmp_path, "redoc.png")

        # the page: a user's recommendations, the model and the last retrain, search, add
        page.goto(f"{server.url}/ui")
        page.wait_for_selector("body[data-loaded]")
        assert page.locator("#model-version").inner_text() == "v1"
        assert "accepted" in page.locator("#retrain").inner_text()
        assert "v1" in page.locator("#retrain").inner_text()
        page.fill("#user", "u1")
        page.click("#user-form button")
        rows = page.locator("#recs tbody tr")
        rows.nth(19).wait_for()
        assert rows.count() == 20
        shown = [rows.nth(i).get_attribute("data-item") for i in range(20)]
        with httpx.Client(base_url=server.url) as client:
            listed = client.get("/recommend/u1?k=20").json()["items"]
        assert shown == [item["item_id"] for item in listed]
        assert rows.first.locator(".score").inner_text() == f"{listed[0]['score']:.4f}"
        assert rows.first.locator(".badge.bundle").count() == 1

        page.fill("#q", "i12")
        page.click("#search-form button")
        page.locator("#results tbody tr").first.wait_for()
        assert "i12" in page.locator("#results").inner_text()

        page.fill("#api-key", API_KEY)
        page.fill("#new-id", "ui-example-item")
        page.click("#add-form button")
        page.locator("#add-status", has_text="lands at #").wait_for()
        placed = page.locator("#recs tr.placed")
        assert placed.get_attribute("data-item") == "ui-example-item"
        assert placed.locator(".badge.online").count() == 1
        # a reserved share of 0.1: the only new item is within the first 10
        assert int(page.locator("#add-status").inner_text().split("#")[1].split()[0]) <= 10
        _shoot(page, tmp_path, "ui.png")
        browser.close()
    assert left == []  # nothing tried to leave 127.0.0.1
    assert errors == []
