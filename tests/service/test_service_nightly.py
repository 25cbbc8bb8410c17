"""The nightly cycle end to end on a small real TikTok sample, against a running service:
interactions posted through the API, retrain, gate, publish, the service moves to the new
version while a load runs through it (no failed request, every answer names one version), and
a deliberately worse candidate is rejected while the live one keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from bundle import versions
from tests.service.conftest import API_KEY, LiveServer

pytestmark = pytest.mark.slow  # over 5 s a test: left out of the quick loop (-m "not slow")

ROOT = Path(__file__).resolve().parents[2]
LIVE = {"model": "early_lightgcn", "max_epochs": 8, "patience": 3,
        "hparams": {"user_dropout": 0.1}}
WORSE = {**LIVE, "lr": 1e-6, "max_epochs": 1}


def _training(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args, "--quiet"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


class Load:
    """Requests in a loop from two threads, recording (status, model version)."""

    def __init__(self, url: str, users: list[str]):
        self.url, self.users = url, users
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(2)]

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                user = self.users[rng.integers(len(self.users))]
                if rng.random() < 0.5:
                    response = client.get(f"/recommend/{user}?k=10")
                else:
                    response = client.post("/recommend", json={"history": ["1", "2"], "k": 10})
                version = response.json().get("model_version") if response.is_success else None
                self.answers.append((response.status_code, version))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)


def test_nightly_cycle_through_a_running_service(tiktok_sample: Path, tmp_path: Path) -> None:
    root, store = tmp_path / "bundles", f"sqlite:///{tmp_path / 'store.db'}"
    (tmp_path / "live.json").write_text(json.dumps(LIVE))
    (tmp_path / "worse.json").write_text(json.dumps(WORSE))
    env = {"PATH": "/usr/bin:/bin", "RECSYS_BUNDLES_ROOT": str(root),
           "RECSYS_DATA": str(tiktok_sample), "RECSYS_DATABASE_URL": store}
    boot = _training("bootstrap", "--config", str(tmp_path / "live.json"), env=env)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    first = versions.current_version(root)

    server = LiveServer({"RECSYS_BUNDLE": str(root / "current"), "RECSYS_DATABASE_URL": store,
                         "RECSYS_REDIS_URL": "", "RECSYS_API_KEY": API_KEY,
                         "RECSYS_BUNDLE_POLL_S": "0.2", "RECSYS_ACCESS_LOG": "false"},
                        tmp_path / "server.log").start()
    try:
        headers = {"X-API-Key": API_KEY}
        rng = np.random.default_rng(0)
        users, trend = rng.choice(1500, 100, replace=False), rng.choice(2000, 20, replace=False)
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            for round_ in range(8):  # a day of traffic with a trend the live model never saw
                for user in users:
                    body = {"user_id": str(user), "item_id": str(rng.choice(trend)),
                            "ts": 1000.0 + round_}
                    assert client.post("/interactions", json=body).status_code == 201

        with Load(server.url, [str(u) for u in users]) as load:
            started = time.monotonic()
            night = _training("retrain", "--config", str(tmp_path / "live.json"),
                              "--tolerance", "0.5", env=env)
            seconds = time.monotonic() - started
            assert night.returncode == 0, night.stdout + night.stderr
            second = versions.current_version(root)
            assert second != first
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and load.answers[-1][1] != second:
                time.sleep(0.05)
            time.sleep(0.5)
        statuses = {status for status, _ in load.answers}
        assert statuses == {200}, f"failed requests: {statuses}"
        seen_versions = [version for _, version in load.answers]
        assert set(seen_versions) == {first, second}
        switch = seen_versions.index(second)
        assert set(seen_versions[switch + 50 :]) == {second}  # no flapping back
        decision = json.loads((root / "gate" / "gate.json").read_text())
        assert decision["holdout"]["candidate"] > decision["holdout"]["live"]
        assert seconds < 300

        with Load(server.url, [str(u) for u in users]) as load:
            # from scratch: warm-started from live, one tiny step would stay as good as live
            worse = _training("retrain", "--config", str(tmp_path / "worse.json"),
                              "--no-warm-start", env=env)
        assert worse.returncode == 1 and "rejected" in worse.stderr
        assert versions.current_version(root) == second
        assert {status for status, _ in load.answers} == {200}
        assert {version for _, version in load.answers} == {second}
    finally:
        server.stop()
