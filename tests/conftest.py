"""Shared fixtures: small real datasets written in the MMRec layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import default_data_dir

TIKTOK_DIR = default_data_dir() / "tiktok"


def write_dataset(
    folder: Path,
    *,
    num_users: int = 30,
    num_items: int = 40,
    per_user: int = 10,
    dims: dict[str, int] | None = None,
    labelled: bool = True,
    seed: int = 0,
) -> Path:
    """A random but well-formed dataset: every user has ``per_user`` distinct items."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userID\titemID\tx_label" if labelled else "userID\titemID"]
    for user in range(num_users):
        items = rng.choice(num_items, size=per_user, replace=False)
        for position, item in enumerate(items):
            label = 2 if position == 0 else 1 if position == 1 else 0
            lines.append(f"{user}\t{item}\t{label}" if labelled else f"{user}\t{item}")
    (folder / "toy.inter").write_text("\n".join(lines) + "\n")
    for name, dim in (dims if dims is not None else {"image": 8, "audio": 4}).items():
        np.save(folder / f"{name}_feat.npy", rng.normal(size=(num_items, dim)).astype(np.float16))
    return folder


@pytest.fixture
def toy_dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "toy")


@pytest.fixture
def tiktok_dir() -> Path:
    if not (TIKTOK_DIR / "tiktok.inter").exists():
        pytest.skip(f"TikTok data not found at {TIKTOK_DIR} (set RECSYS_DATA_DIR)")
    return TIKTOK_DIR


def write_tiktok_sample(folder: Path, num_users: int = 1500) -> Path:
    """The first ``num_users`` TikTok users with all their rows and splits, items re-indexed
    to the ones they touch (features sliced to match): a small real dataset."""
    rows = np.loadtxt(TIKTOK_DIR / "tiktok.inter", dtype=np.int64, skiprows=1)
    rows = rows[rows[:, 0] < num_users]
    items, rows[:, 1] = np.unique(rows[:, 1], return_inverse=True)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userID\titemID\tx_label", *("\t".join(map(str, r)) for r in rows)]
    (folder / "tiktok.inter").write_text("\n".join(lines) + "\n")
    for name in ("audio", "image"):
        np.save(folder / f"{name}_feat.npy", np.load(TIKTOK_DIR / f"{name}_feat.npy")[items])
    return folder


@pytest.fixture(scope="session")
def tiktok_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (TIKTOK_DIR / "tiktok.inter").exists():
        pytest.skip(f"TikTok data not found at {TIKTOK_DIR} (set RECSYS_DATA_DIR)")
    return write_tiktok_sample(tmp_path_factory.mktemp("tiktok") / "tiktok-sample")


#: Fixtures that read ../shared/datasets: a test using one is marked ``dataset``
#: (``-m "not dataset"`` runs without the shared data at all).
DATASET_FIXTURES = {"tiktok_dir", "tiktok_sample"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATASET_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.dataset)
