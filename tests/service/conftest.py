"""Fixtures: factory bundles, apps on real SQLite/Redis, live uvicorn servers, private Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from bundle.testing import FactoryBundle, make_bundle
from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_client(url: str = LOCAL_REDIS) -> redis.Redis:
    """A client that fails at once (redis-py retries with backoff by default)."""
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                retry=Retry(NoBackoff(), 0))


def redis_reachable(url: str = LOCAL_REDIS) -> bool:
    try:
        return bool(redis_client(url).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def factory(tmp_path_factory: pytest.TempPathFactory) -> FactoryBundle:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "v1")


@pytest.fixture
def make_settings(tmp_path: Path, factory: FactoryBundle) -> Iterator[Callable[..., Settings]]:
    """Settings on a fresh SQLite file and a unique Redis namespace (cleaned afterwards)."""
    prefixes = []

    def make(**overrides) -> Settings:
        prefix = f"test-{uuid.uuid4().hex[:12]}"
        prefixes.append(prefix)
        values = dict(
            bundle=factory.path,
            reload_root=tmp_path.parent,  # the test's temporary tree: factory and test bundles
            database_url=f"sqlite:///{tmp_path / 'store.db'}",
            redis_url=LOCAL_REDIS if redis_reachable() else None,
            cache_prefix=prefix,
            api_key=API_KEY,
            redis_backoff_s=0.5,
        )
        return Settings(**{**values, **overrides})

    yield make
    if redis_reachable():
        client = redis_client()
        for prefix in prefixes:
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client


class LiveServer:
    """A real ``python -m service`` (uvicorn) process on a free port."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> LiveServer:
        env = {**os.environ, **self.env, "RECSYS_PORT": str(self.port),
               "RECSYS_HOST": "127.0.0.1"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def live_server(tmp_path: Path, factory: FactoryBundle) -> Iterator[Callable[..., LiveServer]]:
    """Factory of started servers (env overrides as keyword arguments); all stopped after."""
    servers: list[LiveServer] = []
    prefix = f"test-{uuid.uuid4().hex[:12]}"

    def start(**env: str) -> LiveServer:
        base = {
            "RECSYS_BUNDLE": str(factory.path),
            "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}",
            "RECSYS_REDIS_URL": LOCAL_REDIS if redis_reachable() else "",
            "RECSYS_CACHE_PREFIX": prefix,
            "RECSYS_API_KEY": API_KEY,
            "RECSYS_REDIS_BACKOFF_S": "0.5",
        }
        server = LiveServer({**base, **env}, tmp_path / "server.log")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """A redis-server of our own on a free port (never the shared 6379); yields a controller:
    ``ctl("stop")`` / ``ctl("start")``; ``ctl.url`` is its URL."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()

    def start() -> None:
        subprocess.run(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--dir", str(tmp_path),
             "--pidfile", str(tmp_path / "redis.pid")],
            check=True, capture_output=True,
        )
        deadline = time.monotonic() + 10
        while not redis_reachable(f"redis://127.0.0.1:{port}/0"):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis did not start")
            time.sleep(0.05)

    def stop() -> None:
        with contextlib.suppress(redis.RedisError):  # shutdown drops the connection
            redis_client(f"redis://127.0.0.1:{port}/0").shutdown(nosave=True)
        deadline = time.monotonic() + 10
        while redis_reachable(f"redis://127.0.0.1:{port}/0") and time.monotonic() < deadline:
            time.sleep(0.05)

    def control(action: str) -> None:
        {"start": start, "stop": stop}[action]()

    control.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    start()
    yield control
    stop()
