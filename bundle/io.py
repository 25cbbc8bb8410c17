"""Writing a bundle atomically, reading and verifying it.

A bundle is one immutable folder (file names in :mod:`bundle.files`)::

    manifest.json          :class:`bundle.manifest.Manifest`: format version, model, dataset,
                           modalities, metrics, training time, sha256 of every other file
    model.pt               trained torch weights (training side only)
    user_embeddings.npy    float32 [U, d]: final user vectors, row = dense user index
    item_embeddings.npy    float32 [I, d]: final item vectors, row = dense item index
    user_ids.json          list: dense user index -> external id (string)
    item_ids.json          list: dense item index -> external id (string)
    interactions.npz       CSR user x item of every interaction known at training time
    train_history.npz      CSR user x item of the training interactions, value = time rank
                           (1 = oldest): the user tower's history, in the order it happened
    new_items.json         list: external ids of the items without training interactions (the
                           ones the model ranks through its new-item path); the manifest's
                           ``serving.new_item_slots`` reserves them a share of every list
    item_tower.onnx        modality features -> item embedding, history state (added by export)
    user_tower.onnx        history states (+ stored user state) -> user embedding
    item_history_states.npy float32 [I, S]: what the user tower aggregates for each item
    user_states.npy        float32 [U, d]: each known user's input to the user tower
    training_history.json  the run: per-epoch loss, validation metrics and times, the phases'
                           times, the final warm/cold report (training side; the service
                           never reads it)
    training_curve.png     the training curve drawn from it

Writes are atomic: everything is staged in a hidden sibling folder and renamed into place, so a
reader sees either the old bundle or the complete new one, never a half-written folder.
Folders are created owner-only (0700): a bundle holds every user's interactions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import scipy.sparse as sp

from bundle.files import (
    FORMAT_VERSION,
    INTERACTIONS,
    ITEM_EMBEDDINGS,
    ITEM_IDS,
    MANIFEST,
    NEW_ITEMS,
    REQUIRED,
    TRAIN_HISTORY,
    USER_EMBEDDINGS,
    USER_IDS,
)
from bundle.manifest import Manifest

FileWriter = Callable[[Path], None]


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, of an unknown format or fails its checksums."""


@dataclass
class Bundle:
    """A loaded, verified bundle."""

    path: Path
    manifest: Manifest
    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    interactions: sp.csr_matrix
    new_items: list[str]
    train_history: sp.csr_matrix | None = None  # None in bundles written before it existed

    def history_of(self, row: int) -> list[str]:
        """The training items of user ``row``, oldest first (item-id order without a
        ``train_history.npz``, where the bundle also cannot tell training from test items)."""
        matrix = self.train_history if self.train_history is not None else self.interactions
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        columns, ranks = matrix.indices[start:end], matrix.data[start:end]
        if self.train_history is not None:
            columns = columns[np.argsort(ranks, kind="stable")]
        return [self.item_ids[c] for c in columns.tolist()]

    def file(self, name: str) -> Path:
        """Path of a bundle file, e.g. ``bundle.file(ITEM_TOWER)``; raises if absent."""
        target = self.path / name
        if name not in self.manifest.files or not target.exists():
            raise BundleError(f"{self.path}: bundle has no {name}")
        return target

    def has(self, name: str) -> bool:
        return name in self.manifest.files

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def new_item_slots(self) -> float:
        """Reserved share of every list for new items (0: none); see bundle.serving_rules."""
        return self.manifest.serving.new_item_slots


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle(
    out_dir: str | Path,
    *,
    manifest: Mapping[str, Any],
    user_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    user_ids: list[str],
    item_ids: list[str],
    interactions: sp.spmatrix,
    new_items: list[str] | None = None,
    train_history: sp.spmatrix | None = None,
    extra_files: Mapping[str, FileWriter] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete bundle atomically; ``extra_files`` maps file name -> writer(path).
    ``manifest`` holds the :class:`Manifest` fields that the arrays do not give (model,
    modalities, ...); ``new_items`` (ids among ``item_ids``) and ``train_history`` (user x
    item, value = time rank of a training pair) are written when given."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists (pass overwrite to replace it)")
    if user_embeddings.shape[0] != len(user_ids) or item_embeddings.shape[0] != len(item_ids):
        raise BundleError("embedding rows and id maps disagree in length")
    if new_items is not None and not set(new_items) <= set(item_ids):
        raise BundleError("new_items lists ids that are not in item_ids")

    def stage(tmp: Path) -> None:
        np.save(tmp / USER_EMBEDDINGS, np.ascontiguousarray(user_embeddings, dtype=np.float32))
        np.save(tmp / ITEM_EMBEDDINGS, np.ascontiguousarray(item_embeddings, dtype=np.float32))
        (tmp / USER_IDS).write_text(json.dumps([str(u) for u in user_ids]))
        (tmp / ITEM_IDS).write_text(json.dumps([str(i) for i in item_ids]))
        sp.save_npz(tmp / INTERACTIONS, sp.csr_matrix(interactions, dtype=np.float32))
        if new_items is not None:
            (tmp / NEW_ITEMS).write_text(json.dumps([str(i) for i in new_items]))
        if train_history is not None:
            sp.save_npz(tmp / TRAIN_HISTORY, sp.csr_matrix(train_history, dtype=np.int64))
        for name, writer in (extra_files or {}).items():
            writer(tmp / name)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    header = {
        "format_version": FORMAT_VERSION,
        "version": stamp,
        "run_id": stamp,  # stays when publishing renames the version
        "created_at": time.time(),
        "embedding_dim": int(item_embeddings.shape[1]),
        "num_users": len(user_ids),
        "num_items": len(item_ids),
    }
    _commit(out, _validated({**header, **manifest}, out / MANIFEST), stage, base=None)
    return out


def add_files(
    bundle_dir: str | Path, files: Mapping[str, FileWriter], **manifest_updates: Any
) -> None:
    """Add or replace files in an existing bundle (e.g. ONNX towers), atomically."""
    bundle_dir = Path(bundle_dir)
    fields = read_manifest(bundle_dir).model_dump()
    manifest = _validated({**fields, **manifest_updates}, bundle_dir / MANIFEST)

    def stage(tmp: Path) -> None:
        for name, writer in files.items():
            writer(tmp / name)

    _commit(bundle_dir, manifest, stage, base=bundle_dir)


def read_manifest(bundle_dir: str | Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST
    if not path.exists():
        raise BundleError(f"{bundle_dir}: not a bundle (no {MANIFEST})")
    fields = _read_json(path)
    if not isinstance(fields, dict):
        raise BundleError(f"{path}: a manifest is a JSON object, got {type(fields).__name__}")
    if fields.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {fields.get('format_version')!r} is not supported "
            f"(this code reads format {FORMAT_VERSION})"
        )
    return _validated(fields, path)


def verify(bundle_dir: str | Path) -> Manifest:
    """Check that every file listed in the manifest exists with its recorded sha256."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    for name, expected in manifest.files.items():
        target = bundle_dir / name
        if not target.exists():
            raise BundleError(f"{target}: listed in the manifest but missing")
        if sha256_of(target) != expected:
            raise BundleError(f"{target}: fails its sha256 check (corrupted or edited)")
    return manifest


def load_bundle(bundle_dir: str | Path, *, check: bool = True) -> Bundle:
    """Load the arrays and id maps of a bundle, verifying checksums first by default."""
    bundle_dir = Path(bundle_dir)
    manifest = verify(bundle_dir) if check else read_manifest(bundle_dir)
    for required in REQUIRED:
        if required not in manifest.files:
            raise BundleError(f"{bundle_dir / required}: incomplete bundle, file missing")
    return Bundle(
        path=bundle_dir,
        manifest=manifest,
        user_embeddings=np.load(bundle_dir / USER_EMBEDDINGS),
        item_embeddings=np.load(bundle_dir / ITEM_EMBEDDINGS),
        user_ids=_json_list(bundle_dir / USER_IDS),
        item_ids=_json_list(bundle_dir / ITEM_IDS),
        interactions=sp.load_npz(bundle_dir / INTERACTIONS).tocsr(),
        new_items=_json_list(bundle_dir / NEW_ITEMS) if NEW_ITEMS in manifest.files else [],
        train_history=(sp.load_npz(bundle_dir / TRAIN_HISTORY).tocsr()
                       if TRAIN_HISTORY in manifest.files else None),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path}: invalid JSON ({error})") from None


def _json_list(path: Path) -> list[str]:
    values = _read_json(path)
    if not isinstance(values, list):
        raise BundleError(f"{path}: expected a JSON list of ids")
    return [str(v) for v in values]


def _validated(fields: Mapping[str, Any], path: Path) -> Manifest:
    try:
        return Manifest.model_validate(dict(fields))
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}"
            for e in error.errors()
        )
        raise BundleError(f"{path}: invalid manifest ({problems})") from None


def _commit(
    out: Path, manifest: Manifest, stage: Callable[[Path], None], base: Path | None
) -> None:
    """Stage into a sibling temp folder (copy of ``base`` if given), write the manifest, swap."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))  # mode 0700
    try:
        if base is not None:
            shutil.copytree(base, tmp, dirs_exist_ok=True)
            (tmp / MANIFEST).unlink(missing_ok=True)
        stage(tmp)
        names = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != MANIFEST)
        files = {name: sha256_of(tmp / name) for name in names}
        text = manifest.model_copy(update={"files": files}).model_dump_json(indent=2)
        (tmp / MANIFEST).write_text(text)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    # Two renames: the old folder leaves, the new one arrives; readers never see a partial tree.
    old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
