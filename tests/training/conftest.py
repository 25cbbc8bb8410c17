"""MLflow runs of the training tests go to a temporary store, never to ./mlruns."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _mlflow_session_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Before any fixture of any scope trains (module-scoped ones included)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = (tmp_path_factory.mktemp("mlruns") / "s").as_uri()
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own store (the runs it logged, and nothing else)."""
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    return store
