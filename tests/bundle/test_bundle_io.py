import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import bundle as bf


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
    assert loaded.manifest.model == "toy"
    assert loaded.manifest.format_version == bf.FORMAT_VERSION
    assert loaded.manifest.embedding_dim == 4
    assert loaded.manifest.metrics == {"test": {"recall@20": 0.5}}
    assert loaded.user_ids == ["a", "b", "c"]
    assert loaded.item_embeddings.shape == (5, 4)
    assert loaded.interactions.nnz == 3
    assert set(loaded.manifest.files) >= {bf.ITEM_EMBEDDINGS, bf.USER_IDS, "notes.txt"}
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
    towers = {"feature_dim": 3, "history_state_dim": 2, "user_state_dim": 4, "opset": 17}
    bf.add_files(out, {bf.ITEM_TOWER: lambda p: p.write_bytes(b"onnx")}, towers=towers)
    loaded = bf.load_bundle(out)
    assert loaded.has(bf.ITEM_TOWER) and loaded.manifest.towers == bf.Towers(**towers)
    assert loaded.file("notes.txt").read_text() == "hello"


def test_bundle_package_imports_neither_torch_nor_the_other_packages() -> None:
    code = ("import sys, bundle, bundle.layout, bundle.towers, bundle.serving_rules; "
            "print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'torch', 'training', 'service', 'models'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_invalid_manifest_names_the_file_and_the_field(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")
    manifest = json.loads((out / bf.MANIFEST).read_text())
    (out / bf.MANIFEST).write_text(json.dumps({**manifest, "embedding_dim": -4, "modle": "x"}))
    with pytest.raises(bf.BundleError) as error:
        bf.load_bundle(out)
    message = str(error.value)
    assert str(out / bf.MANIFEST) in message
    assert "embedding_dim" in message and "modle" in message  # a typo is refused, not ignored
    with pytest.raises(bf.BundleError, match="serving.new_item_slots"):
        _write(tmp_path / "c", manifest={"model": "toy", "serving": {"new_item_slots": 1.5}})
    assert not (tmp_path / "c").exists()


def test_bundle_folders_are_owner_only(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")
    assert out.stat().st_mode & 0o777 == 0o700
    bf.add_files(out, {"more.txt": lambda p: p.write_text("x")})
    assert out.stat().st_mode & 0o777 == 0o700


def test_a_file_named_in_the_error_when_an_id_map_is_broken(tmp_path: Path) -> None:
    out = _write(tmp_path / "b")
    (out / bf.USER_IDS).write_text("{not json")
    with pytest.raises(bf.BundleError, match=str(out / bf.USER_IDS)):
        bf.load_bundle(out, check=False)
