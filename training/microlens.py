"""MicroLens (user sequences + item titles) turned into the MMRec layout at run time.

The MicroLens licence forbids redistributing a modified copy, so the shared files
(``<X>_pairs.tsv``: ``userID<TAB>itemID itemID ...`` in chronological order, ``<X>_titles.csv``:
header ``item,title``) are only ever read. What training needs is derived into the cache
(``$RECSYS_CACHE_DIR`` or ``~/.cache/mmrec``)::

    <cache>/datasets/<source folder name>/<fingerprint>/
        <source folder name>.inter  TSV ``userID itemID x_label``, dense 0-based ids
        user_ids.json   dense user id -> original userID (the string in the file)
        item_ids.json   dense item id -> original item id (the string in the file)
        titles.json     dense item id -> raw title, kept for later encoders
        text_feat.npy   float32 [num_items, dim], row = dense item id (default: MiniLM,
                        mean pooling, last layer, through the encoder cache)
        derived.json    source files, fingerprint, counts, rules, which features text_feat holds

The fingerprint is the sha256 of a format version and both source files' bytes, so a changed
source or derivation rule gets a new folder and an unchanged one is reused as is. A folder is
built under a temporary name beside its final one and renamed into place only when complete:
a folder that exists is complete, and two concurrent derivations cannot mix.

Rules:

* Leave-one-out: a user's last item is the test target (x_label 2), the second-to-last the
  validation target (1), all earlier ones train (0); rows keep the chronological order.
* Users with fewer than 3 items keep every item in train and get no validation or test target:
  a target needs both a validation step and some history. Users with no items get no id.
  (MicroLens-50k has none of either: every user has at least 5 items.)
* Items are the union of the sequences and the titles file, ordered by original id (as
  integers when every id is one). An item without a title gets the empty string, which the
  encoder turns into the deterministic ``[CLS] [SEP]`` features rather than zeros; a titled
  item nobody interacted with is kept, rankable by content only. (MicroLens-50k: both lists are
  the same 19,220 items and every title is non-empty.)
* Users are numbered in file order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.encoders.cache import (
    atomic_save_npy,
    atomic_write_bytes,
    cache_root,
    item_features,
    resolve_encoder,
)
from training.encoders.registry import Encoder, EncoderSpec
from training.errors import DataError

FORMAT_VERSION = 1
MIN_SEQUENCE = 3  # test + validation + at least one training item
_log = logging.getLogger(__name__)


@dataclass
class Sequences:
    """The derived interactions and id maps, before anything is written."""

    users: list[str]  # dense user id -> original id
    items: list[str]  # dense item id -> original id
    titles: list[str]  # dense item id -> title ("" when missing)
    rows: np.ndarray  # int64 [N, 3]: user, item, x_label; per user in chronological order
    untitled: int = 0  # items with no title in the titles file
    short_users: int = 0  # users with fewer than MIN_SEQUENCE items

    def counts(self) -> dict[str, int]:
        labels = self.rows[:, 2]
        train_items = np.unique(self.rows[labels == 0, 1])
        test_items = self.rows[labels == 2, 1]
        return {
            "users": len(self.users),
            "items": len(self.items),
            "interactions": len(self.rows),
            "train": int((labels == 0).sum()),
            "valid": int((labels == 1).sum()),
            "test": int((labels == 2).sum()),
            "cold_test_targets": int((~np.isin(test_items, train_items)).sum()),
            "untitled_items": self.untitled,
            "short_users": self.short_users,
        }


def raw_files(folder: Path) -> tuple[Path, Path] | None:
    """``(pairs, titles)`` when ``folder`` holds raw MicroLens files, else None."""
    pairs = sorted(folder.glob("*_pairs.tsv"))
    if not pairs:
        return None
    titles = sorted(folder.glob("*_titles.csv"))
    if len(pairs) != 1 or len(titles) != 1:
        found = ", ".join(p.name for p in pairs + titles)
        raise DataError(f"{folder}: expected one *_pairs.tsv and one *_titles.csv, found {found}")
    return pairs[0], titles[0]


def read_sequences(pairs_file: Path, titles_file: Path, *, progress: bool = False) -> Sequences:
    """Parse both files and apply the leave-one-out rules of the module docstring."""
    titles_by_item = _read_titles(titles_file)
    sequences: list[tuple[str, list[str]]] = []
    seen_users: set[str] = set()
    with pairs_file.open(encoding="utf-8") as handle:
        lines = tqdm(handle, desc=f"reading {pairs_file.name}", unit=" users", disable=not progress)
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            user, sep, rest = line.rstrip("\r\n").partition("\t")
            if not sep or not user.strip():
                raise DataError(f"{pairs_file}:{lineno}: expected 'userID<TAB>itemID itemID ...'")
            if user in seen_users:
                raise DataError(f"{pairs_file}:{lineno}: user {user!r} appears twice")
            seen_users.add(user)
            items = rest.split()
            if items:
                sequences.append((user, items))
    if not sequences:
        raise DataError(f"{pairs_file}: no user has any item")

    item_ids = set(titles_by_item).union(*(set(items) for _, items in sequences))
    numeric = all(i.isdigit() for i in item_ids)
    items = sorted(item_ids, key=(lambda i: (int(i), i)) if numeric else None)
    dense_item = {item: index for index, item in enumerate(items)}

    rows: list[tuple[int, int, int]] = []
    short = 0
    for user_index, (_, seq) in enumerate(sequences):
        n = len(seq)
        if n < MIN_SEQUENCE:
            short += 1
        for position, item in enumerate(seq):
            label = 0 if n < MIN_SEQUENCE else max(0, position - (n - 3))
            rows.append((user_index, dense_item[item], label))
    return Sequences(
        users=[user for user, _ in sequences],
        items=items,
        titles=[titles_by_item.get(item, "") for item in items],
        rows=np.array(rows, dtype=np.int64).reshape(-1, 3),
        untitled=sum(item not in titles_by_item for item in items),
        short_users=short,
    )


def _read_titles(titles_file: Path) -> dict[str, str]:
    with titles_file.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [c.strip() for c in header[:2]] != ["item", "title"]:
            raise DataError(f"{titles_file}: expected the header 'item,title', got {header}")
        titles: dict[str, str] = {}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise DataError(f"{titles_file}:{lineno}: expected 2 CSV fields, got {len(row)}")
            titles[row[0].strip()] = row[1]
    return titles


def fingerprint(pairs_file: Path, titles_file: Path) -> str:
    """Identifies a derivation: format version plus both source files' contents."""
    digest = hashlib.sha256(f"microlens-derivation-v{FORMAT_VERSION}\n".encode())
    for file in (pairs_file, titles_file):
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def derived_folder(source: Path, cache_dir: str | Path | None = None) -> Path:
    """Where ``source`` is (or will be) derived to."""
    return _locate(Path(source), cache_dir)[2]


def _locate(source: Path, cache_dir: str | Path | None) -> tuple[Path, Path, Path]:
    files = raw_files(source)
    if files is None:
        raise DataError(f"{source}: no MicroLens *_pairs.tsv file")
    name = source.resolve().name
    return *files, cache_root(cache_dir) / "datasets" / name / fingerprint(*files)


def derive(
    source: Path,
    *,
    cache_dir: str | Path | None = None,
    encoder: str | EncoderSpec | Encoder = "minilm",
    progress: bool = True,
) -> Path:
    """The derived folder of a raw MicroLens folder, built on first use (idempotent, atomic)."""
    source = Path(source)
    pairs_file, titles_file, target = _locate(source, cache_dir)
    if target.is_dir():
        return target
    name = source.resolve().name
    _log.info("deriving %s into %s", source, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        seq = read_sequences(pairs_file, titles_file, progress=progress)
        lines = ["userID\titemID\tx_label"]
        lines += [f"{u}\t{i}\t{label}" for u, i, label in seq.rows.tolist()]
        (tmp / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for file, values in (
            ("user_ids.json", seq.users),
            ("item_ids.json", seq.items),
            ("titles.json", seq.titles),
        ):
            (tmp / file).write_text(json.dumps(values, ensure_ascii=False), encoding="utf-8")
        meta = {
            "source": {"pairs": str(pairs_file.resolve()), "titles": str(titles_file.resolve())},
            "fingerprint": target.name,
            "format_version": FORMAT_VERSION,
            "counts": seq.counts(),
            "rules": {
                "split": "leave-one-out: last item test (2), second-to-last valid (1), rest train",
                "short_users": f"fewer than {MIN_SEQUENCE} items: all train, no valid/test",
                "untitled_items": "empty string title",
            },
        }
        (tmp / "derived.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        write_text_features(tmp, encoder, cache_dir=cache_dir, progress=progress)
        tmp.chmod(0o755)  # mkdtemp makes 0700
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent derivation finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_text_features(
    folder: Path,
    encoder: str | EncoderSpec | Encoder = "minilm",
    pooling: str = "mean",
    layer: int = -1,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """(Re)write ``folder/text_feat.npy`` from ``titles.json`` through the encoder cache."""
    titles_file = folder / "titles.json"
    if not titles_file.is_file():
        raise DataError(f"{folder}: no titles.json, so no text to encode (not a derived dataset)")
    titles = json.loads(titles_file.read_text(encoding="utf-8"))
    features = item_features(
        titles, encoder, pooling, layer, cache_dir=cache_dir, progress=progress
    )
    out = folder / "text_feat.npy"
    atomic_save_npy(out, features)
    meta_file = folder / "derived.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    meta["text_features"] = {
        "encoder": resolve_encoder(encoder)[0].name,
        "pooling": pooling,
        "layer": layer,
        "shape": list(features.shape),
        "dtype": "float32",
    }
    atomic_write_bytes(meta_file, json.dumps(meta, indent=2).encode())
    return out
