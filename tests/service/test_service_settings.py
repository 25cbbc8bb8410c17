"""Configuration from the environment, and the service's import boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_settings_come_from_recsys_environment_variables(monkeypatch):
    monkeypatch.setenv("RECSYS_BUNDLE", "/srv/bundle")
    monkeypatch.setenv("RECSYS_API_KEY", "s3cret")
    monkeypatch.setenv("RECSYS_REDIS_URL", "")
    monkeypatch.setenv("RECSYS_CACHE_TTL_S", "60")
    monkeypatch.setenv("RECSYS_INDEX_TYPE", "hnsw")
    settings = Settings()
    assert settings.bundle == Path("/srv/bundle") and settings.redis_url is None
    assert settings.api_key.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)
    assert settings.cache_ttl_s == 60 and settings.index_type == "hnsw"


def test_defaults_serve_bundles_tiktok_on_sqlite(monkeypatch):
    for name in ("RECSYS_BUNDLE", "RECSYS_DATABASE_URL", "RECSYS_API_KEY", "RECSYS_INDEX_TYPE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.bundle == Path("bundles/tiktok")
    assert settings.database_url.startswith("sqlite:///") and settings.api_key is None
    assert settings.index_type == "auto" and settings.history_len == 50


@pytest.mark.parametrize(("name", "value"), [("RECSYS_INDEX_TYPE", "lsh"),
                                             ("RECSYS_CACHE_TTL_S", "0"),
                                             ("RECSYS_INDEX_DEVICE", "tpu")])
def test_invalid_configuration_fails_at_start(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_service_never_imports_torch_or_training_code():
    # the only bridge is the top-level bundle package
    code = ("import sys, service.app; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torch_geometric', 'models', 'training')]; "
            "assert not bad, bad; assert 'bundle.io' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env={"PATH": "/usr/bin:/bin", "RECSYS_REDIS_URL": ""})
