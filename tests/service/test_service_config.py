"""``python -m service --help``, unknown ``RECSYS_*`` variables, and the list of variables the
project's other programs read (which the service must not call unknown)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from service.settings import (
    OTHER_PROGRAMS_VARIABLES,
    Settings,
    unknown_variable_warnings,
    unknown_variables,
)
from training.scheduler import SchedulerSettings

ROOT = Path(__file__).resolve().parents[2]
ENVIRON_CALLS = {"get", "getenv", "pop", "setdefault"}


def _service(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env})


def test_help_lists_every_setting_with_its_default_and_description_and_exits():
    run = _service("--help", RECSYS_PORT="1")  # would serve on port 1 if it did not exit
    assert run.returncode == 0, run.stderr
    out = " ".join(run.stdout.split())  # descriptions are wrapped
    for field, info in Settings.model_fields.items():
        assert f"RECSYS_{field.upper()} " in out, field
        assert info.description and " ".join(info.description.split()) in out, field
    assert "RECSYS_CACHE_TTL_S (int, default 300)" in out
    assert "RECSYS_OPEN_WRITES (bool, default false)" in out
    assert "RECSYS_INDEX_TYPE (auto | flat | ivf | ivfpq | hnsw, default auto)" in out
    assert "Uvicorn running" not in run.stdout + run.stderr


def test_arguments_and_invalid_settings_exit_2_with_one_line():
    run = _service("--port", "9")
    assert run.returncode == 2 and "takes no arguments" in run.stderr and "--help" in run.stderr
    run = _service(RECSYS_CACHE_TTL_S="0")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "RECSYS_CACHE_TTL_S" in run.stderr


def test_unknown_variables_are_named_with_the_closest_known_one():
    environ = {"RECSYS_APIKEY": "s3cret", "recsys_bundel": "x", "RECSYS_QQQQ": "1",
               "RECSYS_API_KEY": "k", "RECSYS_RETRAIN_CRON": "0 3 * * *",
               "RECSYS_DATA_DIR": "/data", "RECSYS_METRIC_PORT": "1", "PATH": "/bin"}
    assert unknown_variables(environ) == [
        ("RECSYS_APIKEY", "RECSYS_API_KEY"), ("RECSYS_METRIC_PORT", "RECSYS_METRICS_PORT"),
        ("RECSYS_QQQQ", None), ("recsys_bundel", "RECSYS_BUNDLE")]
    assert unknown_variable_warnings({"RECSYS_APIKEY": "s"}) == [
        "unknown environment variable RECSYS_APIKEY ignored: did you mean RECSYS_API_KEY?"]
    every_known = {f"RECSYS_{f.upper()}": "1" for f in Settings.model_fields}
    assert unknown_variables({**every_known, **dict.fromkeys(OTHER_PROGRAMS_VARIABLES, "1")}) == []


def _training_variables() -> set[str]:
    """What training reads: SchedulerSettings' fields, the CLI's ``envvar=`` options, and
    ``os.environ`` / ``os.getenv`` look-ups of ``RECSYS_*`` names, from its source."""
    names = {f"RECSYS_{field.upper()}" for field in SchedulerSettings.model_fields}
    for path in sorted((ROOT / "training").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            found: list[ast.expr] = []
            if isinstance(node, ast.Call):
                found += [k.value for k in node.keywords if k.arg == "envvar"]
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in ENVIRON_CALLS and node.args \
                        and "environ" in ast.unparse(func.value) + func.attr:
                    found.append(node.args[0])
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
                found.append(node.slice)
            for value in found:
                for leaf in ast.walk(value):
                    if isinstance(leaf, ast.Constant) and str(leaf.value).startswith("RECSYS_"):
                        names.add(str(leaf.value))
    return names


def test_the_other_programs_list_is_what_training_reads():
    assert sorted(OTHER_PROGRAMS_VARIABLES) == sorted(_training_variables())


def test_the_training_reader_sees_what_it_should():
    found = _training_variables()
    assert {"RECSYS_BUNDLES_ROOT", "RECSYS_DATA_DIR", "RECSYS_RETRAIN_CRON",
            "RECSYS_CACHE_DIR"} <= found


def test_a_misspelled_variable_is_warned_about_at_start(live_server):
    server = live_server(RECSYS_APIKEY="s3cret", RECSYS_RETRAIN_CRON="0 3 * * *")
    lines = [json.loads(line) for line in server.log.read_text().splitlines()
             if line.startswith("{")]
    warnings = [line["event"] for line in lines if line["level"] == "warning"]
    assert "unknown environment variable RECSYS_APIKEY ignored: did you mean RECSYS_API_KEY?" \
        in warnings
    assert not [w for w in warnings if "RECSYS_RETRAIN_CRON" in w]
