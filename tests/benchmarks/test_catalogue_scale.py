"""benchmarks/catalogue_scale.py on a tiny catalogue: every index kind gets a row whose recall
is measured against exact search and whose depth the service's calibration chose."""

from __future__ import annotations

import re

from benchmarks import catalogue_scale


def test_index_section_measures_every_kind(tmp_path):
    out = tmp_path / "scale.md"
    catalogue_scale.main(["--sizes", "4000", "--serve-sizes", "", "--dim", "16",
                          "--seconds", "0.2", "--probes", "40", "--calibration", "64",
                          "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 4,000 |")]
    kinds = [row.split("|")[2].strip() for row in rows]
    assert kinds == ["flat", "ivf", "ivfpq", "hnsw"]
    for row in rows:
        recall = float(row.split("|")[6])
        assert 0.0 < recall <= 1.0
    assert "nprobe=" in rows[1] and re.search(r"efSearch=\d+", rows[3])
    assert float(rows[0].split("|")[6]) == 1.0  # exact search is the truth
