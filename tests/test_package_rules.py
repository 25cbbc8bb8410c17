"""The import rules between the top-level packages (README "Layout"): the service and training
are siblings joined only by the two torch-free contracts, ``bundle/`` (the trained model) and
``eventlog/`` (what the service logs online); ``models/`` is pure torch. Every import counts,
including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "service": {"training", "models", "torch"},
    "training": {"service"},
    "bundle": {"service", "training", "models", "eventlog", "torch"},
    "eventlog": {"service", "training", "models", "torch"},
    "models": {"service", "training", "bundle", "eventlog"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level names every ``import`` and ``from ... import`` of a file reaches."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_none_of_its_forbidden_neighbours(package: str) -> None:
    breaches = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {file: names for file, names in breaches.items() if names} == {}


def test_the_rule_reader_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    import torch.nn\n    from service.store import Store\n")
    assert imported_packages(source) == {"torch", "service"}


def test_benchmarks_borrow_nothing_from_the_tests() -> None:
    """Shared factories live in the package they build (``bundle/testing.py``)."""
    borrowing = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "benchmarks").rglob("*.py"))
                 if '"tests"' in path.read_text()
                 or imported_packages(path) & {"tests", "conftest", "helpers"}]
    assert borrowing == []
