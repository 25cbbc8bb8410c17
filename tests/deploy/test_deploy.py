"""Images and compose, validated without a Docker engine: hadolint on the Dockerfile, the
Compose specification's schema and the real Compose v2 binary on the compose file, and every
command the two files run, run here as local processes against the local Redis and PostgreSQL
(so a typo in an entry point, a flag or a variable name fails a test)."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import compose
import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
BIN = Path(sys.executable).parent
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/test"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    binary = Path(compose.__file__).parent / "docker-compose"  # the Go binary itself
    return subprocess.run([str(binary), "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE),
                           *args], capture_output=True, text=True, env=env or _base_env())


def _base_env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dockerfile_passes_hadolint_at_warning_level() -> None:
    result = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "warning",
                             str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_specification_schema() -> None:
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema",
                             "vendor.compose-spec", str(COMPOSE_FILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_v2_accepts_the_file_and_refuses_it_without_its_secrets() -> None:
    ok = _compose("config", "-q")
    assert ok.returncode == 0, ok.stderr
    env = _base_env()
    binary = Path(compose.__file__).parent / "docker-compose"
    broken = subprocess.run([str(binary), "-f", str(COMPOSE_FILE), "config", "-q"],
                            capture_output=True, text=True, env=env)  # no .env: no password
    assert broken.returncode != 0 and "POSTGRES_PASSWORD" in broken.stderr


def _resolved() -> dict:
    result = _compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def _dockerfile_json(instruction: str) -> dict[str, list[str]]:
    """Stage name -> the exec-form array of ``instruction`` (CMD, or HEALTHCHECK's CMD)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found, stage = {}, None
    for line in text.splitlines():
        if match := re.match(r"FROM \S+ AS (\S+)", line):
            stage = match.group(1)
        if line.startswith(instruction):
            array = line[line.index("CMD") + 3 :].strip() if instruction != "CMD" else line[3:]
            found[stage] = json.loads(array)
    return found


def test_images_run_as_a_numeric_user_with_an_exec_form_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^USER (\S+)", text, re.M) == ["10001:10001", "10001:10001"]
    assert set(_dockerfile_json("HEALTHCHECK")) == {"serve"}
    assert set(_dockerfile_json("CMD")) == {"serve", "train"}
    assert "ARG BASE_IMAGE" in text and "ARG GPU" in text


class Local:
    """Maps a container's environment onto this machine: the compose network's hosts to the
    local services, the volumes to temporary folders."""

    def __init__(self, tmp: Path, data: Path, config: Path):
        self.tmp, self.data, self.config = tmp, data, config
        self.prefix = f"deploy{uuid.uuid4().hex[:8]}_"

    def env(self, service: dict, image_env: dict[str, str] | None = None) -> dict[str, str]:
        values = {**(image_env or {}), **(service.get("environment") or {})}
        out = _base_env()
        for key, value in values.items():
            value = str(value)
            if value.startswith("postgresql://"):
                value = LOCAL_PG
            elif value.startswith("redis://"):
                value = LOCAL_REDIS
            for folder in ("bundles", "data", "state"):
                if value == f"/{folder}" or value.startswith(f"/{folder}/"):
                    value = str(self.tmp / folder) + value[len(folder) + 1 :]
                if value.startswith(f"sqlite:////{folder}/"):
                    value = f"sqlite:///{self.tmp / folder}/" + value.split(f"/{folder}/", 1)[1]
            out[key] = value
        out["RECSYS_TABLE_PREFIX"] = self.prefix  # a private set of tables in the shared database
        out["RECSYS_DATA"] = str(self.data)  # the small real sample instead of all of TikTok
        out["RECSYS_TRAIN_CONFIG"] = str(self.config)
        out["RECSYS_DATA_DIR"] = str(self.data.parent)
        return out


def _image_env(stage: str) -> dict[str, str]:
    """The ENV lines of a Dockerfile stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env, current = {}, None
    for line in text.splitlines():
        if match := re.match(r"FROM \S+ AS (\S+)", line):
            current = match.group(1)
        if current == stage and line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, value = pair.split("=", 1)
                env[key] = value
    return env


def _wait_http(url: str, timeout: float = 60.0) -> str:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} never answered")


def _healthcheck(test: list[str], env: dict[str, str]) -> int:
    kind, *rest = test
    argv = ["sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, timeout=30).returncode


@pytest.mark.slow
def test_every_command_of_the_compose_file_and_the_dockerfile_runs_here(
    tiktok_sample: Path, tmp_path: Path
) -> None:
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"model": "lightgcn", "max_epochs": 3}))
    local = Local(tmp_path, tiktok_sample, config)
    services = _resolved()
    commands = _dockerfile_json("CMD")
    assert services["api"]["command"] == commands["serve"]
    assert services["scheduler"]["command"] == commands["train"]

    # the images' own services: their healthchecks against the local Redis and PostgreSQL
    store_env = {**_base_env(), "PGHOST": "127.0.0.1"}
    for name in ("redis", "postgres"):
        assert _healthcheck(services[name]["healthcheck"]["test"], store_env) == 0, name

    # bootstrap: trains and publishes a first version, and is a no-op the second time
    env = local.env(services["bootstrap"], _image_env("train"))
    for _ in range(2):
        run = subprocess.run(services["bootstrap"]["command"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "bundles" / "current" / "manifest.json").exists()
    assert "nothing to do" in run.stdout

    # api: serves the published version; both healthchecks pass
    env = local.env(services["api"], _image_env("serve"))
    env["RECSYS_PORT"] = str(_free_port())
    api = subprocess.Popen(services["api"]["command"], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_http(f"http://127.0.0.1:{env['RECSYS_PORT']}/readyz")
        healthchecks = [services["api"]["healthcheck"]["test"],
                        ["CMD", *_dockerfile_json("HEALTHCHECK")["serve"]]]
        for test in healthchecks:
            assert _healthcheck(test, env) == 0, test
        body = json.loads(_wait_http(f"http://127.0.0.1:{env['RECSYS_PORT']}/recommend/3?k=5"))
        assert body["model_version"] == os.readlink(tmp_path / "bundles" / "current").split("/")[-1]
    finally:
        api.terminate()
        api.wait(20)

    # scheduler: starts, exposes its metrics, waits for the night
    env = local.env(services["scheduler"], _image_env("train"))
    env["RECSYS_METRICS_PORT"] = str(_free_port())
    scheduler = subprocess.Popen(services["scheduler"]["command"], env=env, cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        metrics = _wait_http(f"http://127.0.0.1:{env['RECSYS_METRICS_PORT']}/metrics")
        assert "recsys_retrain_running 0.0" in metrics
        assert scheduler.poll() is None
    finally:
        scheduler.terminate()
        _, errors = scheduler.communicate(timeout=20)
    assert "retrain scheduled '0 3 * * *'" in errors, errors


@pytest.fixture(autouse=True)
def _binaries_present() -> None:
    for name in ("hadolint", "check-jsonschema"):
        if not (BIN / name).exists():
            pytest.fail(f"{name} is missing: pip install -e '.[dev]'")
