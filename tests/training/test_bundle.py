import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from training import bundle as bf


def _write(path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    args = dict(
        manifest={"model": "toy", "metrics": {"test": {"recall@20": 0.5}}},
        user_embeddings=rng.normal(size=(3, 4)).astype(np.float32),
        item_embeddings=rng.normal(size=(5, 4)).astype(np.float32),
        user_ids=["a", "b", "c"],
        item_ids=[str(i) for i in range(5)],
        interactions=sp.csr_matrix(np.eye(3, 5)),
        extra_files={"notes.txt": lambda p: p.write_text("hello")},
    )
    args.update(overrides)
    return bf.write_bundle(path, **args)


def test_round_trip_keeps_arrays_ids_and_manifest(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")
    loaded = bf.load_bundle(out)
    assert loaded.manifest["model"] == "toy"
    assert loaded.manifest["format_version"] == bf.FORMAT_VERSION
    assert loaded.manifest["embedding_dim"] == 4
    assert loaded.user_ids == ["a", "b", "c"]
    assert loaded.item_embeddings.shape == (5, 4)
    assert loaded.interactions.nnz == 3
    assert set(loaded.manifest["files"]) >= {bf.ITEM_EMBEDDINGS, bf.USER_IDS, "notes.txt"}
    assert loaded.file("notes.txt").read_text() == "hello"


def test_tampered_file_fails_the_checksum(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")
    np.save(out / bf.ITEM_EMBEDDINGS, np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(bf.BundleError, match="sha256"):
        bf.load_bundle(out)


def test_missing_file_and_foreign_format_are_reported(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")
    (out / "notes.txt").unlink()
    with pytest.raises(bf.BundleError, match="missing"):
        bf.verify(out)
    manifest = json.loads((out / bf.MANIFEST).read_text())
    manifest["format_version"] = 99
    (out / bf.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(bf.BundleError, match="format 99"):
        bf.load_bundle(out)
    with pytest.raises(bf.BundleError, match="not a bundle"):
        bf.load_bundle(tmp_path)


def test_existing_bundle_is_not_overwritten_by_accident(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")
    with pytest.raises(bf.BundleError, match="already exists"):
        _write(out)
    _write(out, user_ids=["x", "y", "z"], overwrite=True)
    assert bf.load_bundle(out).user_ids == ["x", "y", "z"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging or old folders left


def test_failed_write_leaves_the_old_bundle_intact(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")

    def broken(path: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        _write(out, extra_files={"x.bin": broken}, overwrite=True)
    assert bf.load_bundle(out).user_ids == ["a", "b", "c"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_add_files_updates_checksums_atomically(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")
    bf.add_files(out, {bf.ITEM_TOWER: lambda p: p.write_bytes(b"onnx")}, exported=True)
    loaded = bf.load_bundle(out)
    assert loaded.has(bf.ITEM_TOWER) and loaded.manifest["exported"] is True
    assert loaded.file("notes.txt").read_text() == "hello"


def test_bundle_module_does_not_import_torch() -> None:
    code = "import sys, training.bundle; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
