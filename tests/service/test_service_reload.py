"""POST /admin/reload: atomic swap, replay onto the new bundle, failures keep the old one."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

import bundle as bundle_format
from bundle import versions
from bundle.testing import FactoryBundle, make_bundle
from service.app import create_app
from tests.service.conftest import AUTH
from tests.service.helpers import brute_force, ids, item_body


def reload(client: TestClient, path: Path | str | None = None):
    body = {"bundle": str(path)} if path is not None else None
    return client.post("/admin/reload", json=body, headers=AUTH)


def test_reload_swaps_bundle_and_reembeds_online_items(client, factory, tmp_path):
    features = factory.random_features(1, seed=9)[0]
    client.post("/items", json={"items": [item_body(factory, "fresh", features)]}, headers=AUTH)
    client.delete("/items/i8", headers=AUTH)
    v2 = make_bundle(tmp_path / "v2", version="v2", seed=1)

    response = reload(client, v2.path)
    assert response.status_code == 200
    assert response.json() == {"model_version": "v2", "previous_version": "v1", "items": 200}
    body = client.post("/recommend", json={"history": ["fresh"], "k": 10}).json()
    embedding, state = v2.embed(features[None])  # re-embedded by the v2 item tower
    expected = brute_force(v2, v2.user_vector([state[0]], None), 10, exclude=["fresh"],
                           extra={"fresh": embedding[0]}, deleted=["i8"])
    assert body["model_version"] == "v2" and ids(body) == expected
    assert client.get("/items/i8").status_code == 404  # deletes survive a reload
    assert client.get("/items/fresh").json()["source"] == "online"


def test_failed_reloads_keep_serving_the_old_bundle(client, factory: FactoryBundle, tmp_path):
    before = client.get("/recommend/u0").json()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(factory.path, corrupt)
    np.save(corrupt / bundle_format.ITEM_EMBEDDINGS, np.zeros((200, 16), np.float32))
    broken_tower = make_bundle(tmp_path / "tower", version="v3")
    bundle_format.add_files(broken_tower.path,
                            {bundle_format.ITEM_TOWER: lambda p: p.write_bytes(b"not onnx")})
    bad_states = make_bundle(tmp_path / "states", version="v4")
    bundle_format.add_files(bad_states.path, {
        bundle_format.ITEM_STATES: lambda p: np.save(p, np.zeros((3, 10), np.float32))
    })
    cases = [
        (corrupt, "sha256"),
        (tmp_path / "missing", "not a bundle"),
        (broken_tower.path, "cannot load bundle"),
        (bad_states.path, "has 3 rows, expected 200"),
    ]
    for path, reason in cases:
        response = reload(client, path)
        assert response.status_code == 422, response.text
        assert reason in response.text and "still serving v1" in response.text
        after = client.get("/recommend/u0").json()
        assert after["model_version"] == "v1" and ids(after) == ids(before)
    assert 'recsys_reloads_total{result="failed"} 4.0' in client.get("/metrics").text


def test_service_starts_unready_without_a_bundle_and_reload_fixes_it(make_settings, factory,
                                                                     tmp_path):
    with TestClient(create_app(make_settings(bundle=tmp_path / "nothing"))) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["ready"]
        assert client.get("/recommend/u0").status_code == 503
        assert reload(client, factory.path).status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/recommend/u0").status_code == 200


def test_requests_during_reloads_are_all_answered(client, factory, tmp_path):
    v2 = make_bundle(tmp_path / "v2", version="v2", seed=1)
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            response = client.get("/recommend/u1?k=5")
            answers.append((response.status_code, response.json().get("model_version")))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for path in (v2.path, factory.path, v2.path):
        assert reload(client, path).status_code == 200
    stop.set()
    for thread in threads:
        thread.join(10)
    assert answers and all(status == 200 for status, _ in answers)
    assert {version for _, version in answers} <= {"v1", "v2"}


def _served_version(client: TestClient) -> str:
    return client.get("/recommend/u1?k=5").json()["model_version"]


def _wait_for(client: TestClient, version: str, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _served_version(client) == version:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"still serving {_served_version(client)}, expected {version}")


def test_the_service_follows_the_current_link_through_publish_and_rollback(
    make_settings, factory, tmp_path
):
    root = tmp_path / "bundles"
    first = versions.publish(factory.path, root)
    v2 = make_bundle(tmp_path / "v2", version="v2", seed=1)
    settings = make_settings(bundle=root / versions.CURRENT, bundle_poll_s=0.05)
    with TestClient(create_app(settings)) as client:
        assert _served_version(client) == first
        second = versions.publish(v2.path, root)
        assert _wait_for(client, second) < 2.0
        versions.rollback(root)
        _wait_for(client, first)
        # a manual reload of another folder stays until the link moves again
        assert reload(client, v2.path).json()["model_version"] == "v2"
        time.sleep(0.2)
        assert _served_version(client) == "v2"
        versions.rollback(root, to=second)
        _wait_for(client, second)
        # a broken version behind the link is refused once and the served one stays
        broken = make_bundle(root / "versions" / "99-broken", version="v3", seed=2).path
        np.save(broken / bundle_format.ITEM_EMBEDDINGS, np.zeros((200, 16), np.float32))
        versions.point_current(root, broken.name)
        time.sleep(0.3)
        assert _served_version(client) == second
        assert 'recsys_reloads_total{result="failed"} 1.0' in client.get("/metrics").text


def test_reload_is_restricted_to_the_reload_root(make_settings, factory, tmp_path):
    settings = make_settings(reload_root=factory.path.parent)
    with TestClient(create_app(settings)) as client:
        outside = make_bundle(tmp_path / "elsewhere", version="v9", seed=3)
        for path in (outside.path, "/etc", f"{factory.path}/../../{tmp_path.name}/elsewhere"):
            response = reload(client, path)
            assert response.status_code == 403, path
            assert "only bundles inside" in response.json()["detail"]
        assert reload(client, factory.path).status_code == 200  # inside: allowed
        assert _served_version(client) == "v1"


def test_an_unreadable_bundle_is_explained_with_the_fix(tmp_path) -> None:
    """A host-trained bundle (0700) mounted into a container running as another uid: root
    reads anything, so the message is checked on the PermissionError the load would raise."""
    from service.errors import unreadable

    folder = tmp_path / "bundle"
    folder.mkdir(mode=0o700)
    message = unreadable(folder, PermissionError(13, "Permission denied", str(folder)))
    assert str(folder) in message and f"uid {os.getuid()}" in message
    assert "mode 0o700" in message and "chmod -R a+rX" in message
