"""The dependency split: the service and its two contracts (bundle/, eventlog/) run on the
"serving" extra alone."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.imports import ROOT, imported_packages, module_graph

OWN = {"bundle", "eventlog", "service", "training", "models", "benchmarks", "tests"}
# factories for tests and benchmarks (they build ONNX towers with ``onnx``, a dev dependency);
# nothing the service or training runs imports them
TEST_ONLY = {Path("bundle/testing.py")}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def _imported_modules(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        if path.relative_to(ROOT) not in TEST_ONLY:
            modules |= imported_packages(path)
    return modules - OWN - set(sys.stdlib_module_names) - {"__future__"}


def test_serving_extra_covers_every_import_of_the_service_and_the_bundle_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = _requirement_names(project["dependencies"])
    allowed |= _requirement_names(project["optional-dependencies"]["serving"])
    assert not {"torch", "torch-geometric", "transformers"} & allowed
    distributions = packages_distributions()
    # starlette and pydantic_core come with fastapi and pydantic
    implied = {"starlette": "fastapi", "pydantic_core": "pydantic"}
    missing = {}
    for module in (_imported_modules(ROOT / "service") | _imported_modules(ROOT / "bundle")
                   | _imported_modules(ROOT / "eventlog")):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if module in implied:
            names.add(implied[module])
        if not names & allowed:
            missing[module] = sorted(names)
    assert not missing, f"imported by service/ or bundle/ but not in the serving extra: {missing}"


def test_bundle_package_needs_only_the_core_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    distributions = packages_distributions()
    for module in _imported_modules(ROOT / "bundle"):
        names = {d.lower() for d in distributions.get(module, [module])} | {module}
        names |= {"pydantic"} if module == "pydantic_core" else set()
        assert names & core, module


def test_nothing_that_runs_in_production_imports_the_test_factories() -> None:
    assert [module for module, targets in module_graph().items()
            if "bundle.testing" in targets] == []
