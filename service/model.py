"""One loaded bundle plus everything that arrived online since it was built.

Pure in-memory state and arithmetic: the index, the towers, the id maps, online histories.
Durability and caching live in ``operations.py``, which owns the order of operations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import bundle as bundle_format
from bundle import ITEM_STATES, USER_STATES
from bundle.layout import layout_of, parse_layout
from bundle.serving_rules import interleave_new_items, reserved_slots
from service.errors import Invalid, NotReady
from service.index import Hit, IndexConfig, ItemIndex
from service.stages import timed
from service.towers import ItemTower, TextTower, UserTower

POPULAR_KEPT = 10_000

log = logging.getLogger(__name__)
# bound on a posted item's embedding and state values: the inner product of two such vectors
# stays finite in float32 up to 340 dimensions (see ``embed_posted``)
MAX_EMBEDDING_VALUE = 1e18


class ServingModel:
    """A bundle ready to serve: towers, index, id maps, and the online state on top of it."""

    def __init__(self, bundle: bundle_format.Bundle, config: IndexConfig, history_len: int = 50,
                 onnx_threads: int = 1, text_precision: str = "int8"):
        manifest = bundle.manifest
        self.bundle = bundle
        self.version = bundle.version
        self.model_name = manifest.model
        # Cut-off of the bundle's data: store events after it are replayed on top.
        self.cutoff = manifest.cutoff
        self.modalities = list(manifest.modalities)
        self.layout = layout_of(self.modalities)
        self.feature_dim = manifest.feature_dim
        towers = bundle.manifest.towers
        # a sequential user tower was trained on at most max_history items: clamp to it
        self.history_len = min(history_len, towers.max_history or history_len) if towers \
            else history_len
        self.dim = int(bundle.item_embeddings.shape[1])
        self.user_rows = {u: row for row, u in enumerate(bundle.user_ids)}
        self.item_rows = {i: row for row, i in enumerate(bundle.item_ids)}

        self.item_tower = self._optional(bundle, bundle_format.ITEM_TOWER, ItemTower, onnx_threads)
        self.user_tower = self._optional(bundle, bundle_format.USER_TOWER, UserTower, onnx_threads)
        self.text_tower = self._text_tower(bundle, text_precision, onnx_threads)
        if self.user_tower is not None and bundle.train_history is None:
            log.warning("bundle %s has no %s: the user tower reads all known interactions in "
                        "item-id order (retrain to fix)", bundle.version,
                        bundle_format.TRAIN_HISTORY)
        self.item_states = np.load(bundle.file(ITEM_STATES)) if bundle.has(ITEM_STATES) else None
        self.user_states = np.load(bundle.file(USER_STATES)) if bundle.has(USER_STATES) else None
        self._check()

        # the users' own vectors calibrate an approximate index's search depth
        self.index = ItemIndex(bundle.item_ids, bundle.item_embeddings, config,
                               queries=bundle.user_embeddings)
        # Reserved new-item slots (bundle.serving_rules): the items ranked through the
        # new-item path, the bundle's and every online one, also sit in a small exact index.
        self.new_item_slots = bundle.new_item_slots
        new_rows = [self.item_rows[i] for i in bundle.new_items]
        self.new_index = ItemIndex([bundle.item_ids[r] for r in new_rows],
                                   bundle.item_embeddings[new_rows])
        counts = np.asarray(bundle.interactions.sum(axis=0)).ravel()
        order = np.argsort(-counts, kind="stable")[:POPULAR_KEPT]
        top = float(counts[order[0]]) if len(order) and counts[order[0]] > 0 else 1.0
        self.popular = [(bundle.item_ids[i], float(counts[i]) / top) for i in order]

        self.online_states: dict[str, np.ndarray] = {}  # history states of online items
        self.online_history: dict[str, list[str]] = {}  # user -> items after the cut-off
        self.user_generation: dict[str, int] = {}  # bumped by each new interaction
        self.replayed_interaction = 0  # the store's last interaction id when replay read it

    @classmethod
    def load(cls, path: str | Path, config: IndexConfig, *, verify: bool = True,
             history_len: int = 50, onnx_threads: int = 1,
             text_precision: str = "int8") -> ServingModel:
        bundle = bundle_format.load_bundle(path, check=verify)
        return cls(bundle, config, history_len=history_len, onnx_threads=onnx_threads,
                   text_precision=text_precision)

    @staticmethod
    def _text_tower(bundle: bundle_format.Bundle, precision: str, threads: int) -> Any:
        """The text bundle's text tower in the asked precision (int8 falls back to float32
        for a bundle exported before the int8 file existed); None for a feature bundle."""
        text = bundle.manifest.text_input
        if text is None or not bundle.has(bundle_format.TEXT_TOWER):
            return None
        name = bundle_format.TEXT_TOWER
        if precision == "int8":
            if bundle.has(bundle_format.TEXT_TOWER_INT8):
                name = bundle_format.TEXT_TOWER_INT8
            else:
                log.warning("bundle %s has no %s: its text tower runs in float32",
                            bundle.version, bundle_format.TEXT_TOWER_INT8)
        return TextTower(bundle.file(name), bundle.path, text.max_tokens, threads)

    @staticmethod
    def _optional(bundle: bundle_format.Bundle, name: str, tower: type, threads: int) -> Any:
        return tower(bundle.file(name), threads) if bundle.has(name) else None

    def _check(self) -> None:
        """Refuse a bundle whose parts disagree, before it replaces a working one."""
        b, problems = self.bundle, []
        if b.user_embeddings.shape[1] != self.dim:
            problems.append(f"user embeddings are {b.user_embeddings.shape[1]}-d, items {self.dim}")
        if b.interactions.shape != (len(b.user_ids), len(b.item_ids)):
            problems.append(f"interactions are {b.interactions.shape}, expected "
                            f"({len(b.user_ids)}, {len(b.item_ids)})")
        if b.train_history is not None and b.train_history.shape != b.interactions.shape:
            problems.append(f"{bundle_format.TRAIN_HISTORY} is {b.train_history.shape}, "
                            f"interactions {b.interactions.shape}")
        if self.item_states is not None and self.item_states.shape[0] != len(b.item_ids):
            problems.append(f"{ITEM_STATES} has {self.item_states.shape[0]} rows, "
                            f"expected {len(b.item_ids)}")
        if self.user_states is not None and self.user_states.shape[0] != len(b.user_ids):
            problems.append(f"{USER_STATES} has {self.user_states.shape[0]} rows, "
                            f"expected {len(b.user_ids)}")
        if self.item_tower is not None:
            if not self.modalities:
                problems.append("manifest lists no modalities for the item tower")
            else:  # run it once: a tower that cannot run must not replace a working bundle
                embedding, state = self.item_tower(np.zeros((2, self.feature_dim), np.float32))
                if embedding.shape != (2, self.dim):
                    problems.append(f"item tower gives {embedding.shape[1]}-d, "
                                    f"expected {self.dim}")
                if self.item_states is not None and state.shape[1] != self.item_states.shape[1]:
                    problems.append(f"item tower state is {state.shape[1]}-d, {ITEM_STATES} "
                                    f"{self.item_states.shape[1]}-d")
        if self.user_tower is not None and self.item_states is not None:
            width = self.item_states.shape[1]
            vector = self.user_tower([np.zeros(width, np.float32)], None, self.user_state_dim)
            if vector.shape != (self.dim,):
                problems.append(f"user tower gives {vector.shape}, expected ({self.dim},)")
        if problems:
            raise bundle_format.BundleError(f"{b.path}: " + "; ".join(problems))

    @property
    def user_state_dim(self) -> int:
        if self.user_states is not None:
            return int(self.user_states.shape[1])
        return int(self.user_tower.user_state_dim or 0) if self.user_tower else 0

    # ---- items -------------------------------------------------------------------------

    def validate_items(
        self, items: Sequence[tuple[str, Mapping[str, Sequence[float]] | None]]
    ) -> None:
        """Unique ids; modality names and dims against the manifest (items given as text have
        no features to check); raises ``Invalid``."""
        expected = {m.name: m.dim for m in self.modalities}
        wanted = ", ".join(f"{m.name} ({m.dim})" for m in self.modalities)
        errors, seen = [], set()
        for position, (item_id, features) in enumerate(items):
            loc = ("body", "items", position)
            if item_id in seen:
                errors.append(_error(loc + ("item_id",), f"duplicate item_id {item_id!r}"))
            seen.add(item_id)
            if features is None:  # a text item: its features come from the text tower
                continue
            for name in sorted(set(features) - set(expected)):
                errors.append(_error(loc + ("features", name),
                                     f"unknown modality {name!r}; this bundle expects {wanted}"))
            for name, dim in expected.items():
                if name not in features:
                    errors.append(_error(loc + ("features",),
                                         f"missing modality {name!r} ({dim} values)"))
                    continue
                values = features[name]
                if len(values) != dim:
                    errors.append(_error(loc + ("features", name),
                                         f"{name} has {len(values)} values, expected {dim}"))
        if errors:
            raise Invalid(errors)

    def feature_matrix(self, features: Sequence[Mapping[str, Sequence[float]]]) -> np.ndarray:
        """Validated features concatenated in manifest order: float32 [B, F].

        Finite JSON numbers beyond the float32 range would become inf here: refused (422)."""
        rows = np.empty((len(features), self.feature_dim), dtype=np.float32)
        with np.errstate(over="ignore"):
            for row, item in enumerate(features):
                start = 0
                for m in self.modalities:
                    rows[row, start : start + m.dim] = item[m.name]
                    start += m.dim
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if len(bad):
            raise Invalid([_error(("body", "items", int(row), "features"),
                                  "feature values outside the float32 range (|x| > 3.4e38)")
                           for row in bad])
        return rows

    def split_features(self, vector: np.ndarray, layout: str) -> dict[str, list[float]]:
        out, start = {}, 0
        for m in parse_layout(layout):
            out[m.name] = vector[start : start + m.dim].tolist()
            start += m.dim
        return out

    def embed(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.item_tower is None:
            raise NotReady(f"bundle {self.version} has no {bundle_format.ITEM_TOWER}")
        return self.item_tower(features)

    def embed_posted(
        self, features: Sequence[Mapping[str, Sequence[float]] | None],
        texts: Sequence[str | None],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(features, embeddings, history states)`` of validated posted items, in order: an
        item's features go through the item tower, its text (a text bundle only, else 422)
        through the text tower, which gives all three, its features stored like posted ones."""
        parts = []
        posted = [row for row, f in enumerate(features) if f is not None]
        if posted:
            matrix = self.feature_matrix([features[row] for row in posted])
            parts.append((posted, (matrix, *self.embed(matrix))))
        written = [row for row, text in enumerate(texts) if text is not None]
        if written:
            if self.text_tower is None:
                raise Invalid([_error(("body", "items"), f"bundle {self.version} takes item "
                                      "features, not text (its manifest has no text_input)")])
            embedding, state, matrix = self.text_tower([texts[row] for row in written])
            parts.append((written, (matrix, embedding, state)))
        out = [np.empty((len(features), *array.shape[1:]), np.float32) for array in parts[0][1]]
        for rows, arrays in parts:
            for target, array in zip(out, arrays, strict=True):
                target[rows] = array
        # Features inside the float32 range can still overflow the tower, or give an embedding
        # whose inner products overflow (3e37 * a user vector): the item would rank with an
        # infinite score, for every user, and JSON cannot carry one. Refused (422), like any
        # input the bundle cannot take (the schema cannot say it: it depends on the weights).
        usable = np.ones(len(features), bool)
        for array in out[1:]:
            with np.errstate(invalid="ignore"):
                usable &= (np.abs(array.reshape(len(array), -1)) <= MAX_EMBEDDING_VALUE).all(1)
        if not usable.all():
            raise Invalid([_error(("body", "items", int(row)), "the item tower gives an "
                                  f"embedding beyond +-{MAX_EMBEDDING_VALUE:g} for these "
                                  f"features (values too large for bundle {self.version})")
                           for row in np.flatnonzero(~usable)])
        return out[0], out[1], out[2]

    def apply_items(self, ids: Sequence[str], embeddings: np.ndarray, states: np.ndarray) -> None:
        self.index.upsert(ids, embeddings)
        self.new_index.upsert(ids, embeddings)  # embedded by the item tower: a new item
        for item_id, state in zip(ids, states, strict=True):
            self.online_states[item_id] = state

    def apply_delete(self, item_id: str) -> bool:
        self.online_states.pop(item_id, None)
        self.new_index.remove(item_id)
        return self.index.remove(item_id)

    def has_item(self, item_id: str) -> bool:
        return item_id in self.index

    def is_online_item(self, item_id: str) -> bool:
        return item_id in self.index and not self.index.in_main(item_id)

    # ---- users -------------------------------------------------------------------------

    def has_user(self, user_id: str) -> bool:
        return user_id in self.user_rows or user_id in self.online_history

    def apply_interaction(self, user_id: str, item_id: str) -> None:
        self.online_history.setdefault(user_id, []).append(item_id)
        # After the history: a reader that sees the new generation also sees the new item.
        self.user_generation[user_id] = self.user_generation.get(user_id, 0) + 1

    def generation(self, user_id: str | None) -> int:
        return self.user_generation.get(user_id, 0) if user_id is not None else 0

    def trained_history(self, user_id: str) -> list[str]:
        """The items the stored vector was trained on, oldest first."""
        row = self.user_rows.get(user_id)
        return [] if row is None else self.bundle.history_of(row)

    def seen(self, user_id: str | None) -> set[str]:
        """Everything the user interacted with (training, validation and test included)."""
        if user_id is None:
            return set()
        row = self.user_rows.get(user_id)
        known: set[str] = set()
        if row is not None:
            matrix = self.bundle.interactions
            columns = matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]
            known = {self.bundle.item_ids[c] for c in columns.tolist()}
        return known | set(self.online_history.get(user_id, ()))

    def user_vector(self, user_id: str | None, extra: Sequence[str] = ()) -> tuple[np.ndarray, str]:
        """The stored vector of a known user without new events, else the user tower's."""
        known = user_id is not None and user_id in self.user_rows
        online = self.online_history.get(user_id, []) if user_id is not None else []
        if known and not online and not extra:
            return self.bundle.user_embeddings[self.user_rows[user_id]], "stored"
        if self.user_tower is None or self.item_states is None:
            raise NotReady(f"bundle {self.version} has no user tower or {ITEM_STATES}")
        history = (self.trained_history(user_id) if known else []) + list(online) + list(extra)
        states = [s for s in map(self.history_state, history) if s is not None]
        states = states[-self.history_len :]
        user_state = None
        if known:
            row = self.user_rows[user_id]
            user_state = (self.user_states[row] if self.user_states is not None
                          else np.zeros(self.user_state_dim, np.float32))
        return self.user_tower(states, user_state, self.user_state_dim), "tower"

    def history_state(self, item_id: str) -> np.ndarray | None:
        """What the user tower consumes for an item; None for a deleted or unknown item."""
        if item_id not in self.index:
            return None
        state = self.online_states.get(item_id)
        if state is None and self.item_states is not None and item_id in self.item_rows:
            state = self.item_states[self.item_rows[item_id]]
        return state

    # ---- ranking -----------------------------------------------------------------------

    def search(
        self, vectors: np.ndarray, k: int, excluded: Sequence[set[str]]
    ) -> list[list[Hit]]:
        """Top ``k`` per user vector, with the bundle's reserved share of each list going to
        new items ranked among themselves (exactly the rule the training report scored)."""
        with timed("faiss"):
            hits = self.index.search(vectors, k, excluded)
            if reserved_slots(self.new_item_slots, k) == 0 or not len(self.new_index):
                return hits
            new_hits = self.new_index.search(vectors, k, excluded)
        new_index = self.new_index
        return [
            interleave_new_items(found, new_found, self.new_item_slots, k,
                                 is_new=lambda hit: hit[0] in new_index, key=_hit_id)
            for found, new_found in zip(hits, new_hits, strict=True)
        ]

    def popular_items(self, k: int, exclude: Iterable[str] = ()) -> list[Hit]:
        exclude = set(exclude)
        hits = []
        for item_id, score in self.popular:
            if item_id in self.index and item_id not in exclude:
                hits.append((item_id, score))
                if len(hits) == k:
                    break
        return hits


def _hit_id(hit: Hit) -> str:
    return hit[0]


def _error(loc: tuple[Any, ...], msg: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": "value_error"}
