"""benchmarks/gpu.py: without a GPU every GPU cell says why, the CPU cells still measure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_writes_its_table_and_says_what_is_missing(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    out = tmp_path / "gpu.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--items", "3000", "--skip-epoch",
         "--bundle", str(tmp_path / "none"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")][2:]
    assert len(rows) == 2 and rows[0].startswith("| FAISS exact, 3,000 x 352 | build ")
    assert "ONNX item tower (factory), 4,096 items" in rows[1]
    if not torch.cuda.is_available():
        assert "no GPU on this machine" in out.read_text()
        assert all(row.endswith("| - |") for row in rows)  # nothing compared, nothing claimed
