"""benchmarks/training_scale.py on tiny synthetic sizes: the table's columns, positive numbers,
the fitted lines, the memory guard's predicted row and the 2-process comparison."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthetic_catalogue import grown_microlens, grown_microlens_shape

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "training_scale.py"
COLUMNS = ["data", "model", "users", "items", "interactions", "processes", "s/epoch",
           "peak RSS GiB", "s per million interactions"]


def _run(tmp_path: Path, *flags: str) -> str:
    out = tmp_path / "training_scale.md"
    result = subprocess.run([sys.executable, str(SCRIPT), *flags, "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    return out.read_text()


def _rows(text: str) -> list[list[str]]:
    """The cells of the first table (the one docs/results.md copies)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| data | model |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip("|").split("|")])
    assert table[0] == COLUMNS
    return table[2:]


def _number(cell: str) -> float:
    return float(re.match(r"≈?([\d,.]+)", cell).group(1).replace(",", ""))


def test_grown_microlens_grows_users_k_times_and_items_sqrt_k() -> None:
    assert grown_microlens_shape(100) == (5_000_000, 192_200)
    dataset = grown_microlens(0.02)
    assert (dataset.num_users, dataset.num_items) == (1_000, 2_718)
    rows = len(dataset.train) + len(dataset.valid) + len(dataset.test)
    assert 0.8 * 7_194 < rows <= 7_194  # a user's repeated draws of an item count once
    assert len(dataset.test) == len(dataset.valid) == len(np.unique(dataset.test[:, 0]))
    assert dataset.modality_dims == [384]


def test_one_tiny_size_writes_the_table_with_positive_numbers(tmp_path: Path) -> None:
    text = _run(tmp_path, "--sizes", "x0.01", "--models", "lightgcn", "--distributed", "none",
                "--steps", "1", "--full-epoch-steps", "0")
    assert text.startswith("# Training cost against data size")
    assert "python benchmarks/training_scale.py --sizes x0.01" in text.split("```")[1]
    (row,) = _rows(text)
    assert row[:2] == ["x0.01", "lightgcn"] and row[5] == "1"
    assert _number(row[2]) == 500 and _number(row[3]) == 1_922
    assert "(est., 1 of 1 steps)" in row[6]  # timed on a slice of the epoch, marked
    assert all(_number(row[i]) > 0 for i in (4, 6, 7, 8))
    assert "## Fitted lines" in text


@pytest.mark.slow
def test_sizes_fits_the_memory_guard_and_two_processes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    assert torch.distributed.is_available()
    text = _run(tmp_path, "--sizes", "x0.01,x0.03,x0.1", "--models", "lightgcn",
                "--distributed", "x0.01", "--steps", "2", "--full-epoch-steps", "1",
                "--fit-from", "0", "--max-gib", "0.1")
    rows = _rows(text)
    assert [(r[0], r[5]) for r in rows] == [("x0.01", "1"), ("x0.01", "2"), ("x0.03", "1"),
                                           ("x0.1", "1")]
    assert all(_number(r[6]) > 0 and _number(r[7]) > 0 for r in rows[:3])
    assert _number(rows[1][7]) > _number(rows[0][7])  # two ranks hold two copies
    assert "pred." in rows[3][6] and "not run" in rows[3][6] and rows[3][4].startswith("≈")
    fitted = text.split("## Fitted lines")[1].split("## One process")[0]
    assert re.search(r"^\| lightgcn \| x0.01, x0.03 \| ", fitted, re.M)
    pair = text.split("## One process against two")[1]
    assert re.search(r"^\| x0.01 \| lightgcn \| .* \| \d+\.\d\dx \| ", pair, re.M)
