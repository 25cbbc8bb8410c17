from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_dataset
from training.data import DataError, load_dataset


def test_tiktok_loads_with_published_statistics(tiktok_dir: Path) -> None:
    data = load_dataset(tiktok_dir)
    assert (data.num_users, data.num_items) == (9308, 6710)
    assert (len(data.train), len(data.valid), len(data.test)) == (59541, 3051, 6130)
    assert data.modality_names == ["audio", "image"]
    assert data.modality_dims == [128, 128]
    assert data.feature_matrix().dtype == np.float32


def test_labelled_splits_are_respected(toy_dataset_dir: Path) -> None:
    data = load_dataset(toy_dataset_dir)
    assert len(data.test) == 30 and len(data.valid) == 30 and len(data.train) == 30 * 8
    assert data.matrix("train").multiply(data.matrix("test")).nnz == 0


def test_unlabelled_data_splits_8_1_1_per_user_reproducibly(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d", labelled=False, per_user=10)
    first, second = load_dataset(folder, seed=7), load_dataset(folder, seed=7)
    assert (len(first.train), len(first.valid), len(first.test)) == (240, 30, 30)
    np.testing.assert_array_equal(first.test, second.test)
    assert not np.array_equal(first.test, load_dataset(folder, seed=8).test)


def test_cold_items_leave_training_but_keep_validation_and_test(toy_dataset_dir: Path) -> None:
    full = load_dataset(toy_dataset_dir)
    data = full.with_cold_items(0.25, seed=1)
    assert len(data.cold_items) == 10
    assert not np.isin(data.train[:, 1], data.cold_items).any()
    # their validation rows stay: what serves new items is chosen on held-out items too
    np.testing.assert_array_equal(data.valid, full.valid)
    assert np.isin(data.cold_test()[:, 1], data.cold_items).all()


def _expect_error(folder: Path, *fragments: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope", "not found")


def test_missing_inter_file(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d")
    (folder / "toy.inter").unlink()
    _expect_error(folder, ".inter", "none")


def test_feature_rows_must_cover_item_ids(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d", num_items=40)
    np.save(folder / "image_feat.npy", np.zeros((20, 8), dtype=np.float16))
    np.save(folder / "audio_feat.npy", np.zeros((20, 4), dtype=np.float16))
    _expect_error(folder, "toy.inter", "out of range", "20 rows")


def test_feature_files_must_agree_on_item_count(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d", num_items=40)
    np.save(folder / "audio_feat.npy", np.zeros((41, 4), dtype=np.float16))
    _expect_error(folder, "disagree")


def test_nan_features_are_rejected_with_the_file_name(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d")
    bad = np.load(folder / "image_feat.npy")
    bad[3, 1] = np.nan
    np.save(folder / "image_feat.npy", bad)
    _expect_error(folder, "image_feat.npy", "NaN", "row 3")


def test_non_integer_ids_point_at_the_line(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d")
    with (folder / "toy.inter").open("a") as handle:
        handle.write("5\tabc\t0\n")
    _expect_error(folder, "toy.inter:", "'abc'")


def test_bad_labels_and_empty_splits(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d")
    (folder / "toy.inter").write_text("userID\titemID\tx_label\n0\t1\t5\n")
    _expect_error(folder, "x_label")
    (folder / "toy.inter").write_text("userID\titemID\tx_label\n0\t1\t0\n0\t2\t2\n")
    _expect_error(folder, "valid split is empty")


def test_missing_header_column(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d")
    (folder / "toy.inter").write_text("user\titemID\n0\t1\n")
    _expect_error(folder, "userID")


def test_cold_start_folds_are_disjoint_and_cover_the_items(toy_dataset_dir: Path) -> None:
    dataset = load_dataset(toy_dataset_dir)
    folds = [dataset.with_cold_items(0.25, seed=s, fold=f).cold_items
             for f, s in zip(range(4), (1, 2, 3, 4), strict=True)]
    assert sorted(np.concatenate(folds).tolist()) == list(range(dataset.num_items))
    assert all(len(f) == dataset.num_items // 4 for f in folds)
    held = dataset.with_cold_items(0.25, fold=2)
    assert not np.isin(held.train[:, 1], folds[2]).any()
    assert np.array_equal(dataset.with_cold_items(0.25, seed=9, fold=2).cold_items, folds[2])
    with pytest.raises(ValueError, match="fold must be in"):
        dataset.with_cold_items(0.25, fold=4)
