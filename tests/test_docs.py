"""The docs against the code: every ``RECSYS_*`` variable and every Prometheus metric the code
defines is documented, every one the docs name exists, the README stays short, and the
generated results page matches the committed results files."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from service.settings import Settings
from training.scheduler import SchedulerSettings

ROOT = Path(__file__).resolve().parents[1]
CODE = ("bundle", "eventlog", "models", "service", "training")
DOCS = [ROOT / "README.md", ROOT / "service" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 10 * 1024
VARIABLE = re.compile(r"\bRECSYS_[A-Z0-9_]*[A-Z0-9]\b")
METRIC_CALLS = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
# generated results pages quote other tools' output, not our configuration
NOT_REFERENCE = {ROOT / "docs" / "results.md"}


def _sources() -> list[Path]:
    return [p for package in CODE for p in sorted((ROOT / package).rglob("*.py"))]


def code_variables() -> set[str]:
    """The settings classes' fields (``RECSYS_`` + name) and every literal ``RECSYS_*``."""
    names = {f"RECSYS_{field.upper()}" for cls in (Settings, SchedulerSettings)
             for field in cls.model_fields}
    for path in _sources():
        names.update(VARIABLE.findall(path.read_text()))
    return names


def documented_variables() -> set[str]:
    """``RECSYS_*`` anywhere in the docs, and the bare names (``BUNDLE``) of the service
    README's configuration section, which lists them without the prefix."""
    names = set()
    for path in DOCS:
        if path not in NOT_REFERENCE:
            names.update(VARIABLE.findall(path.read_text()))
    service = (ROOT / "service" / "README.md").read_text()
    section = service.split("## Configuration (`RECSYS_*`)", 1)[1].split("\n## ", 1)[0]
    names.update(f"RECSYS_{name}" for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", section))
    return names


def code_metrics() -> set[str]:
    """Names passed to prometheus-client's metric constructors, and metrics written as text
    (the gate's ``.prom`` file)."""
    names = set()
    for path in _sources():
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
                    and (getattr(node.func, "id", None) or getattr(node.func, "attr", None))
                    in METRIC_CALLS and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(str(node.args[0].value))
        names.update(re.findall(r'f?"(recsys_[a-z0-9_]+)[ {]', source))
    return names


def documented_metrics() -> set[str]:
    names = set()
    for path in DOCS:
        if path not in NOT_REFERENCE:
            names.update(re.findall(r"\brecsys_[a-z0-9_]*[a-z0-9]\b", path.read_text()))
    return names


def test_every_variable_the_code_reads_is_documented() -> None:
    assert sorted(code_variables() - documented_variables()) == []


def test_every_variable_the_docs_name_exists() -> None:
    assert sorted(documented_variables() - code_variables()) == []


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    code, docs = code_metrics(), documented_metrics()
    # counters are exposed with a _total suffix; docs may name either form
    exposed = code | {f"{name}_total" for name in code} | {f"{n}_bucket" for n in code} \
        | {f"{n}_count" for n in code} | {f"{n}_sum" for n in code}
    assert sorted(name for name in code if name not in docs
                  and f"{name}_total" not in docs) == []
    assert sorted(docs - exposed) == []


def test_the_readme_is_a_short_front_page() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= README_LIMIT


def test_the_results_page_is_what_the_results_files_give() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "results_doc.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
