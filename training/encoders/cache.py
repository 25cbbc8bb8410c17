"""Pooled encoder states cached on disk, outside the repository, keyed by the text's sha256.

Encoding 20k titles takes minutes on a CPU; a cached title costs a lookup. The cache lives in
``$RECSYS_CACHE_DIR`` or else ``~/.cache/mmrec``, one table per (encoder, pooling, max length)::

    <root>/encoders/<encoder>/<pooling>-len<max_length>/
        keys.npy     |S64 [N]: sha256 hex digest of each text (UTF-8); row i of states below
        states.npy   float16 [N, num_states, dim]: the pooled state of every hidden layer
        meta.json    encoder, pooling, max_length, num_states, dim (for people and a shape check)
        .lock        writers hold an exclusive flock on it while they append

Why it stays consistent without a database: rows are only ever appended, never changed or
reordered, and every file is replaced atomically (temp file in the same folder, then
``os.replace``). A writer replaces ``states.npy`` before ``keys.npy`` and a reader loads
``keys.npy`` before ``states.npy``, so the reader's states always hold at least as many rows as
its keys and those rows are the same; extra rows are ignored. Writers serialise on the lock and
re-read the table under it, so concurrent runs merge instead of overwriting each other. A
changed text has a new digest and is simply encoded as a new row; nothing is ever invalidated.
One forward pass yields every pooling, so all poolings' tables are filled together. Missing
texts are encoded in chunks, each appended as it finishes: an interrupted run keeps its work.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.encoders.registry import (
    ENCODERS,
    Encoder,
    EncoderError,
    EncoderSpec,
    get_encoder_spec,
    load_encoder,
)

KEY_DTYPE = np.dtype("S64")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$RECSYS_CACHE_DIR``, else ``~/.cache/mmrec``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("RECSYS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mmrec"


def text_key(text: str) -> str:
    """The cache key of a text: sha256 hex digest of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part."""
    with _atomic(path) as handle:
        handle.write(data)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temp file and ``os.replace``."""
    with _atomic(path) as handle:
        np.save(handle, array, allow_pickle=False)


@contextmanager
def _atomic(path: Path) -> Iterator:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the cache is as readable as any other file
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StateTable:
    """One (encoder, pooling, max length) table of the cache."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keys_file = folder / "keys.npy"
        self.states_file = folder / "states.npy"

    @classmethod
    def of(cls, spec: EncoderSpec, pooling: str, cache_dir: str | Path | None = None) -> StateTable:
        return cls(
            cache_root(cache_dir) / "encoders" / spec.name / f"{pooling}-len{spec.max_length}"
        )

    def read(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(keys, states)``; states is memory-mapped and cut to the keys' length."""
        if not self.keys_file.is_file():
            return np.zeros(0, KEY_DTYPE), None
        keys = np.load(self.keys_file, allow_pickle=False)  # keys first: see module docstring
        try:
            states = np.load(self.states_file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise EncoderError(
                f"{self.states_file}: unreadable ({error}); delete the folder"
            ) from None
        if states.ndim != 3 or states.shape[0] < len(keys):
            raise EncoderError(
                f"{self.folder}: {len(keys)} keys but states of shape {states.shape}; "
                "delete the folder to rebuild it"
            )
        return keys, states[: len(keys)]

    def index(self) -> dict[str, int]:
        keys, _ = self.read()
        return {key.decode("ascii"): row for row, key in enumerate(keys)}

    def append(self, keys: Sequence[str], states: np.ndarray, meta: dict) -> int:
        """Add the rows whose key is not stored yet; returns how many were added."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            stored_keys, stored = self.read()
            known = {key.decode("ascii") for key in stored_keys}
            fresh: list[int] = []
            for row, key in enumerate(keys):
                if key not in known:
                    known.add(key)
                    fresh.append(row)
            if not fresh:
                return 0
            new_states = states[fresh].astype(np.float16)
            if stored is not None and stored.shape[1:] != new_states.shape[1:]:
                raise EncoderError(
                    f"{self.folder}: stored states are {stored.shape[1:]}, new ones "
                    f"{new_states.shape[1:]}; delete the folder to rebuild it"
                )
            new_keys = np.array([keys[row] for row in fresh], dtype=KEY_DTYPE)
            if stored is not None:
                new_states = np.concatenate([stored, new_states])
                new_keys = np.concatenate([stored_keys, new_keys])
            atomic_save_npy(self.states_file, new_states)  # states before keys
            atomic_save_npy(self.keys_file, new_keys)
            meta_file = self.folder / "meta.json"
            if not meta_file.is_file():
                atomic_write_bytes(meta_file, json.dumps(meta, indent=2).encode())
            return len(fresh)


def resolve_encoder(encoder: str | EncoderSpec | Encoder) -> tuple[EncoderSpec, Encoder | None]:
    """``(spec, loaded model or None)`` for a registry name, a spec or a loaded encoder."""
    if isinstance(encoder, str):
        return get_encoder_spec(encoder), None
    if isinstance(encoder, EncoderSpec):
        return encoder, None
    return encoder.spec, encoder


def cached_states(
    texts: Sequence[str],
    encoder: str | EncoderSpec | Encoder = "minilm",
    pooling: str = "mean",
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    chunk_size: int = 4096,
) -> np.ndarray:
    """float16 ``[len(texts), num_states, dim]``: cached rows, encoding only unseen texts.

    ``encoder`` is a registry name, a spec, or an already loaded encoder; the model is loaded
    only when some text is missing, so a fully cached call never imports torch.
    """
    spec, model = resolve_encoder(encoder)
    if pooling not in spec.poolings:
        raise ValueError(f"encoder {spec.name!r} pools {spec.poolings}, not {pooling!r}")
    if not texts:
        raise ValueError("no texts to encode")
    keys = [text_key(text) for text in texts]
    table = StateTable.of(spec, pooling, cache_dir)
    index = table.index()
    missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in index}
    if missing:
        # a registered spec goes by name, so the process reuses its loaded model
        model = model or load_encoder(spec.name if ENCODERS.get(spec.name) is spec else spec)
        _encode_into_cache(model, list(missing.items()), cache_dir, progress, chunk_size)
        index = table.index()
    _, states = table.read()
    assert states is not None
    rows = np.fromiter((index[key] for key in keys), dtype=np.int64, count=len(keys))
    return np.asarray(states[rows])


def _encode_into_cache(
    model: Encoder,
    items: list[tuple[str, str]],
    cache_dir: str | Path | None,
    progress: bool,
    chunk_size: int,
) -> None:
    spec = model.spec
    desc = f"encoding with {spec.name}"
    with tqdm(total=len(items), desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, len(items), chunk_size):
            chunk = items[start : start + chunk_size]
            pooled = model.encode([text for _, text in chunk], progress=bar)
            for pooling, states in pooled.items():
                meta = {
                    "encoder": spec.name,
                    "pooling": pooling,
                    "max_length": spec.max_length,
                    "num_states": model.num_states,
                    "dim": model.dim,
                    "dtype": "float16",
                    "key": "sha256 of the UTF-8 text",
                }
                table = StateTable.of(spec, pooling, cache_dir)
                table.append([key for key, _ in chunk], states, meta)


def item_features(
    texts: Sequence[str],
    encoder: str | EncoderSpec | Encoder = "minilm",
    pooling: str = "mean",
    layer: int = -1,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """float32 ``[len(texts), dim]`` item features: one pooled hidden state (default: last)."""
    states = cached_states(texts, encoder, pooling, cache_dir=cache_dir, progress=progress)
    if not -states.shape[1] <= layer < states.shape[1]:
        raise ValueError(f"layer {layer} out of range: the encoder has {states.shape[1]} states")
    return states[:, layer, :].astype(np.float32)
