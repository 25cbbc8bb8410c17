"""Load and validate a dataset in the MMRec layout.

A dataset folder holds one ``<name>.inter`` file (tab-separated, header ``userID itemID`` and
optionally ``x_label`` with 0/1/2 = train/validation/test) and one ``<modality>_feat.npy`` per
modality whose row ``i`` holds the features of item ``i``. Without ``x_label`` every user's
interactions are split 8:1:1 at random with a fixed seed.

A folder with raw MicroLens files (``*_pairs.tsv`` + ``*_titles.csv``) and no ``.inter`` is never
written to: on first use it is derived into this layout in the cache (``$RECSYS_CACHE_DIR`` or
``~/.cache/mmrec``; leave-one-out split, text features from a frozen encoder, see
:mod:`training.microlens`) and loaded from there, so ``load_dataset("microlens-50k")`` works.

Every problem with the input is reported as a :class:`DataError` naming the file and what is
wrong, before any model sees the data.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from training.errors import DataError

SPLITS = ("train", "valid", "test")
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``$RECSYS_DATA_DIR`` if set, else ``../shared/datasets`` beside the project."""
    env = os.environ.get("RECSYS_DATA_DIR")
    if env:
        return Path(env)
    return (_PROJECT_ROOT.parent / "shared" / "datasets").resolve()


def resolve_dataset_path(name_or_path: str | Path) -> Path:
    """Accept a folder path, or a dataset name looked up in :func:`default_data_dir`.

    A raw MicroLens folder resolves to its derived copy in the cache, derived on first use.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return _derived_if_raw(path)
    candidate = default_data_dir() / str(name_or_path)
    if candidate.is_dir():
        return _derived_if_raw(candidate)
    raise DataError(
        f"dataset {str(name_or_path)!r} not found: neither a folder nor a name under "
        f"{default_data_dir()} (set RECSYS_DATA_DIR or pass a folder path). "
        "The TikTok data comes from the public HKUDS/DiffMM repository (Datasets/tiktok)."
    )


def _derived_if_raw(folder: Path) -> Path:
    """``folder`` itself, unless it holds raw MicroLens files and no ``.inter``."""
    if any(folder.glob("*.inter")):
        return folder
    from training import microlens  # lazy: only MicroLens needs the encoder code

    if microlens.raw_files(folder) is None:
        return folder
    return microlens.derive(folder)


#: The permutation that cuts items into cold-start folds (fixed, so folds stay disjoint).
FOLD_SEED = 0


@dataclass
class Dataset:
    """Interactions split three ways plus per-modality item features (float32)."""

    name: str
    num_users: int
    num_items: int
    train: np.ndarray  # int64 [N, 2]: user, item
    valid: np.ndarray
    test: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = ""  # the folder it was loaded from
    # Per train row, when it happened as far as the data says (the row of its first appearance
    # in the .inter file; retraining appends logged events after it): the user tower reads
    # histories in this order. None: unknown (item-id order is used).
    train_time: np.ndarray | None = None
    # External ids of the dense indices, as bundles and the service name them; None: the
    # index itself ("0", "1", ...). Retraining appends users and items that arrived online.
    user_ids: list[str] | None = None
    item_ids: list[str] | None = None

    def train_histories(self) -> sp.csr_matrix:
        """User x item CSR of the training pairs whose value is the pair's time rank + 1."""
        time_of = (self.train_time if self.train_time is not None
                   else np.arange(len(self.train), dtype=np.int64))
        rank = np.empty(len(time_of), dtype=np.int64)
        rank[np.argsort(time_of, kind="stable")] = np.arange(1, len(time_of) + 1)
        shape = (self.num_users, self.num_items)
        return sp.csr_matrix((rank, (self.train[:, 0], self.train[:, 1])), shape=shape)

    def external_user_ids(self) -> list[str]:
        if self.user_ids is not None:
            return self.user_ids
        return [str(u) for u in range(self.num_users)]

    def external_item_ids(self) -> list[str]:
        if self.item_ids is not None:
            return self.item_ids
        return [str(i) for i in range(self.num_items)]

    @property
    def modality_names(self) -> list[str]:
        return list(self.features)

    @property
    def modality_dims(self) -> list[int]:
        return [int(f.shape[1]) for f in self.features.values()]

    def feature_matrix(self) -> np.ndarray | None:
        """All modalities concatenated in ``modality_names`` order, or None without features."""
        if not self.features:
            return None
        return np.concatenate(list(self.features.values()), axis=1).astype(np.float32)

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def matrix(self, *splits: str) -> sp.csr_matrix:
        """Binary user x item matrix of the union of the given splits."""
        pairs = np.concatenate([self.split(s) for s in splits]) if splits else np.zeros((0, 2))
        return self.pairs_matrix(pairs)

    def pairs_matrix(self, pairs: np.ndarray) -> sp.csr_matrix:
        """Binary user x item matrix of ``(user, item)`` rows."""
        pairs = pairs.astype(np.int64)
        data = np.ones(len(pairs), dtype=np.float32)
        m = sp.csr_matrix(
            (data, (pairs[:, 0], pairs[:, 1])), shape=(self.num_users, self.num_items)
        )
        m.data[:] = 1.0  # duplicates summed by the constructor count once
        return m

    def with_cold_items(
        self, fraction: float, seed: int = 2024, fold: int | None = None
    ) -> Dataset:
        """Hold out a share of items from training entirely (cold-start protocol).

        Their training interactions are dropped; their validation and test interactions stay
        as cold rows, so a model that embeds them from features alone is scored on them, and
        what serves new items (the new-item scale, the reserved share) is chosen on validation
        rows of held-out items too, never on test (before issue 20 their validation rows were
        dropped and validation saw only the items that never had an interaction). Without
        ``fold`` the share is drawn at random with ``seed``; with it, the items are cut into
        ``round(1 / fraction)`` disjoint folds by one fixed permutation (:data:`FOLD_SEED`,
        whatever the training seed) and fold ``fold`` is held out, so runs over folds
        0, 1, ... hold out disjoint items and their results can be pooled.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"cold-start fraction must be in (0, 1), got {fraction}")
        if fold is None:
            rng = np.random.default_rng(seed)
            n_cold = max(1, round(fraction * self.num_items))
            cold = rng.choice(self.num_items, size=n_cold, replace=False)
        else:
            folds = max(1, round(1.0 / fraction))
            if not 0 <= fold < folds:
                raise ValueError(f"fold must be in [0, {folds}) for fraction {fraction}, "
                                 f"got {fold}")
            order = np.random.default_rng(FOLD_SEED).permutation(self.num_items)
            cold = np.array_split(order, folds)[fold]
        cold = np.sort(cold).astype(np.int64)
        is_cold = np.zeros(self.num_items, dtype=bool)
        is_cold[cold] = True
        kept = ~is_cold[self.train[:, 1]]
        return replace(
            self,
            train=self.train[kept],
            train_time=None if self.train_time is None else self.train_time[kept],
            cold_items=cold,
        )

    def with_validation_in_training(self) -> Dataset:
        """The same data with the validation interactions moved into training (newest, after
        every training row) and no validation split: what a refit trains on once validation
        has chosen its settings."""
        newest = -1 if self.train_time is None or not len(self.train_time) else int(
            self.train_time.max())
        time = (None if self.train_time is None
                else np.concatenate([self.train_time,
                                     newest + 1 + np.arange(len(self.valid), dtype=np.int64)]))
        return replace(self, train=np.concatenate([self.train, self.valid]), train_time=time,
                       valid=np.zeros((0, 2), dtype=np.int64))

    def with_valid_sample(self, max_users: int, seed: int = 2024) -> Dataset:
        """The same data with validation rows of at most ``max_users`` random users (the
        others' rows dropped): a cheaper validation for early stopping on large data sets."""
        users = np.unique(self.valid[:, 0])
        if len(users) <= max_users:
            return self
        rng = np.random.default_rng(seed)
        keep = np.zeros(self.num_users, dtype=bool)
        keep[rng.choice(users, size=max_users, replace=False)] = True
        return replace(self, valid=self.valid[keep[self.valid[:, 0]]])

    def cold_test(self) -> np.ndarray:
        """Test interactions whose item is held out from training."""
        is_cold = np.zeros(self.num_items, dtype=bool)
        is_cold[self.cold_items] = True
        return self.test[is_cold[self.test[:, 1]]]

    def summary(self) -> str:
        dims = zip(self.modality_names, self.modality_dims, strict=True)
        mods = ", ".join(f"{n} {d}-d" for n, d in dims)
        return (
            f"{self.name}: {self.num_users} users, {self.num_items} items, "
            f"{len(self.train)}/{len(self.valid)}/{len(self.test)} train/valid/test"
            f"{', modalities: ' + mods if mods else ''}"
        )


def load_dataset(path: str | Path, *, seed: int = 2024, require_features: bool = False) -> Dataset:
    """Load ``path`` (a folder, or a dataset name under the data directory) and validate it."""
    folder = resolve_dataset_path(path)
    inter_files = sorted(folder.glob("*.inter"))
    if len(inter_files) != 1:
        found = ", ".join(p.name for p in inter_files) or "none"
        raise DataError(f"{folder}: expected exactly one <name>.inter file, found {found}")
    inter_file = inter_files[0]
    users, items, labels = _read_inter(inter_file)

    features = _read_features(folder)
    if require_features and not features:
        raise DataError(f"{folder}: this model needs item features but no *_feat.npy file exists")
    if features:
        num_items = next(iter(features.values())).shape[0]
        bad = items >= num_items
        if bad.any():
            raise DataError(
                f"{inter_file}: itemID {int(items[bad].max())} is out of range: the feature files "
                f"have {num_items} rows (row = item id)"
            )
    else:
        num_items = int(items.max()) + 1
    num_users = int(users.max()) + 1

    pairs = np.stack([users, items], axis=1)
    if labels is None:
        labels = _random_split(users, seed)
    splits = {name: np.unique(pairs[labels == code], axis=0) for code, name in enumerate(SPLITS)}
    rows = np.flatnonzero(labels == 0)
    _, first = np.unique(pairs[rows], axis=0, return_index=True)  # aligned with splits["train"]
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise DataError(f"{inter_file}: the {name} split is empty")
    return Dataset(
        name=inter_file.stem,
        num_users=num_users,
        num_items=num_items,
        features=features,
        source=str(folder.resolve()),
        train_time=rows[first].astype(np.int64),
        **splits,
    )


def _read_inter(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: file is empty")
        columns = [c.strip().split(":")[0] for c in header]
        for required in ("userID", "itemID"):
            if required not in columns:
                raise DataError(f"{path}: header {header} lacks the column {required!r}")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: no interactions after the header")
    try:
        table = np.asarray(rows, dtype=np.int64)
    except ValueError:
        for lineno, row in enumerate(rows, start=2):
            if len(row) != len(columns):
                raise DataError(
                    f"{path}:{lineno}: expected {len(columns)} tab-separated fields, got {len(row)}"
                ) from None
            for value in row:
                if not value.strip().lstrip("-").isdigit():
                    raise DataError(
                        f"{path}:{lineno}: {value!r} is not an integer id or label"
                    ) from None
        raise
    users = table[:, columns.index("userID")]
    items = table[:, columns.index("itemID")]
    if (users < 0).any() or (items < 0).any():
        raise DataError(f"{path}: ids must be non-negative integers")
    labels = table[:, columns.index("x_label")] if "x_label" in columns else None
    if labels is not None and not np.isin(labels, (0, 1, 2)).all():
        bad = labels[~np.isin(labels, (0, 1, 2))][0]
        raise DataError(f"{path}: x_label must be 0, 1 or 2 (train/valid/test), found {bad}")
    return users, items, labels


def _read_features(folder: Path) -> dict[str, np.ndarray]:
    features: dict[str, np.ndarray] = {}
    for file in sorted(folder.glob("*_feat.npy")):
        modality = file.name[: -len("_feat.npy")]
        try:
            array = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise DataError(f"{file}: cannot be read as a .npy array ({error})") from None
        if array.ndim != 2:
            raise DataError(f"{file}: expected a 2-d array (items x dims), got shape {array.shape}")
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            rows = np.unique(np.nonzero(~np.isfinite(array))[0])
            raise DataError(f"{file}: NaN or inf in {len(rows)} rows (first: row {rows[0]})")
        features[modality] = array
    row_counts = {name: a.shape[0] for name, a in features.items()}
    if len(set(row_counts.values())) > 1:
        raise DataError(f"{folder}: feature files disagree on the item count: {row_counts}")
    return features


def _random_split(users: np.ndarray, seed: int) -> np.ndarray:
    """Per-user 8:1:1 split; labels 0/1/2. Users with few interactions keep them in train."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(len(users), dtype=np.int64)
    order = np.argsort(users, kind="stable")
    boundaries = np.flatnonzero(np.diff(users[order])) + 1
    for group in np.split(order, boundaries):
        group = rng.permutation(group)
        n_eval = int(round(0.1 * len(group)))
        labels[group[:n_eval]] = 2
        labels[group[n_eval : 2 * n_eval]] = 1
    return labels
