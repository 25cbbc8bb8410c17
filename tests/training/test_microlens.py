"""MicroLens derived at run time into the cache: leave-one-out split, dense ids, text features."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from training import microlens
from training.cli import app
from training.data import DataError, default_data_dir, load_dataset, resolve_dataset_path
from training.encoders import cached_states, item_features

MICROLENS_DIR = default_data_dir() / "microlens-50k"

# chronological sequences; ids are strings as in the real files
SEQUENCES = {
    "7": ["105", "101", "109", "103"],
    "2": ["101", "99", "105"],
    "30": ["109", "102"],  # short: all train
    "4": ["103", "105", "101", "102", "109", "99"],
    "11": ["104"],  # short: all train
}
TITLES = {
    "99": "Cute cat jumps into a box # pets",
    "101": 'Spicy "duck" noodles, homemade',
    "102": "This sudden reversal, you can't guess the ending # funny",
    "103": "Guitar cover 🎸 of a classic",
    "104": "Morning run by the river",
    "105": "Two Yuan comic, part 3",
    "110": "Nobody watched this one",  # titled, never interacted with
}  # 109 has no title


def _write_raw(folder: Path) -> Path:
    folder.mkdir(parents=True)
    lines = [f"{user}\t{' '.join(items)}\n" for user, items in SEQUENCES.items()]
    (folder / "MicroLens-50k_pairs.tsv").write_text("".join(lines))
    with (folder / "MicroLens-50k_titles.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title"])
        writer.writerows(TITLES.items())
    for file in folder.iterdir():
        file.chmod(0o444)
    return folder


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.fixture
def raw_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small copy in the real format under a data dir, with the cache in tmp_path."""
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    return _write_raw(tmp_path / "shared" / "microlens-50k")


def test_derives_leave_one_out_with_dense_ids(raw_dir: Path, tmp_path: Path) -> None:
    before = _digests(raw_dir)
    data = load_dataset("microlens-50k")
    folder = Path(data.source)
    assert folder.parent == tmp_path / "cache" / "datasets" / "microlens-50k"
    assert _digests(raw_dir) == before  # the shared files are only read

    users = json.loads((folder / "user_ids.json").read_text())
    items = json.loads((folder / "item_ids.json").read_text())
    titles = json.loads((folder / "titles.json").read_text())
    assert users == list(SEQUENCES)  # file order
    assert items == ["99", "101", "102", "103", "104", "105", "109", "110"]  # numeric order
    assert titles == [TITLES.get(item, "") for item in items]
    assert data.name == "microlens-50k"
    assert (data.num_users, data.num_items) == (5, 8)

    rows = np.loadtxt(folder / "microlens-50k.inter", dtype=np.int64, skiprows=1, ndmin=2)
    assert (folder / "microlens-50k.inter").read_text().startswith("userID\titemID\tx_label\n")
    assert set(rows[:, 0]) == set(range(5))
    for dense_user, (_, seq) in enumerate(SEQUENCES.items()):
        mine = rows[rows[:, 0] == dense_user]
        assert [items[i] for i in mine[:, 1]] == seq  # chronological
        expected = [0] * len(seq) if len(seq) < 3 else [0] * (len(seq) - 2) + [1, 2]
        assert mine[:, 2].tolist() == expected
    assert len(data.test) == len(data.valid) == 3
    assert len(data.train) == sum(len(s) for s in SEQUENCES.values()) - 6

    meta = json.loads((folder / "derived.json").read_text())
    assert meta["counts"]["short_users"] == 2 and meta["counts"]["untitled_items"] == 1
    assert meta["counts"]["cold_test_targets"] == 1  # user 4 ends on 99, trained by nobody
    assert meta["text_features"] == {
        "encoder": "minilm",
        "pooling": "mean",
        "layer": -1,
        "shape": [8, 384],
        "dtype": "float32",
    }


def test_text_features_are_minilm_means_of_the_titles(raw_dir: Path) -> None:
    data = load_dataset("microlens-50k")
    titles = json.loads((Path(data.source) / "titles.json").read_text())
    assert data.modality_names == ["text"]
    text = data.features["text"]
    assert text.shape == (8, 384) and text.dtype == np.float32
    np.testing.assert_array_equal(text, item_features(titles, progress=False))
    np.testing.assert_array_equal(text[6], item_features([""], progress=False)[0])  # untitled


def test_derivation_is_idempotent(raw_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = resolve_dataset_path("microlens-50k")
    stamps = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("a derived folder is reused, not rebuilt")

    monkeypatch.setattr(microlens, "write_text_features", refuse)
    assert resolve_dataset_path(raw_dir) == folder == microlens.derived_folder(raw_dir)
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamps
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp folder left
    assert sorted(p.name for p in raw_dir.iterdir()) == [
        "MicroLens-50k_pairs.tsv",
        "MicroLens-50k_titles.csv",
    ]


def test_a_changed_source_is_derived_anew(raw_dir: Path, tmp_path: Path) -> None:
    first = resolve_dataset_path(raw_dir)
    other = tmp_path / "elsewhere" / "microlens-50k"
    _write_raw(other)
    assert resolve_dataset_path(other) == first  # same bytes, same derivation
    titles = other / "MicroLens-50k_titles.csv"
    titles.chmod(0o644)
    titles.write_text(titles.read_text().replace("Morning run", "Evening run"))
    second = resolve_dataset_path(other)
    assert second != first and second.parent == first.parent
    assert "Evening run" in (second / "titles.json").read_text()


def test_failed_derivation_leaves_nothing_behind(raw_dir: Path, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(microlens, "write_text_features", fail)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        resolve_dataset_path("microlens-50k")
    assert not any(microlens.derived_folder(raw_dir).parent.iterdir())


def test_features_command_rewrites_text_feat(raw_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["features", "--data", "microlens-50k", "--pooling", "cls", "--layer", "2", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    folder = microlens.derived_folder(raw_dir)
    titles = json.loads((folder / "titles.json").read_text())
    expected = cached_states(titles, "minilm", "cls", progress=False)[:, 2].astype(np.float32)
    np.testing.assert_array_equal(np.load(folder / "text_feat.npy"), expected)
    assert json.loads((folder / "derived.json").read_text())["text_features"]["layer"] == 2
    assert str(folder / "text_feat.npy") in result.output
    assert "cls-len64" in result.output

    result = runner.invoke(app, ["features", "--layer", "-1", "--quiet"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        np.load(folder / "text_feat.npy"), item_features(titles, progress=False)
    )
    bad = runner.invoke(app, ["features", "--pooling", "max", "--quiet"])
    assert bad.exit_code == 2 and "mean|cls" in bad.output


def test_malformed_pairs_are_reported_with_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "X_pairs.tsv").write_text("1\t5 6 7\n2 no tab here\n")
    (folder / "X_titles.csv").write_text("item,title\n5,a\n")
    with pytest.raises(DataError, match=r"X_pairs.tsv:2"):
        microlens.read_sequences(folder / "X_pairs.tsv", folder / "X_titles.csv")
    (folder / "X_titles.csv").unlink()
    with pytest.raises(DataError, match="one \\*_pairs.tsv and one \\*_titles.csv"):
        microlens.raw_files(folder)


def test_plain_folders_resolve_to_themselves(toy_dataset_dir: Path) -> None:
    assert resolve_dataset_path(toy_dataset_dir) == toy_dataset_dir


@pytest.mark.dataset
def test_real_microlens_counts_match_the_readme() -> None:
    files = microlens.raw_files(MICROLENS_DIR) if MICROLENS_DIR.is_dir() else None
    if files is None:
        pytest.skip(f"MicroLens-50k not found at {MICROLENS_DIR} (set RECSYS_DATA_DIR)")
    counts = microlens.read_sequences(*files).counts()
    assert counts["users"] == 50_000 and counts["items"] == 19_220
    assert counts["interactions"] == 359_708
    assert counts["test"] == counts["valid"] == 50_000
    assert counts["cold_test_targets"] == 2_226
    assert counts["short_users"] == counts["untitled_items"] == 0
