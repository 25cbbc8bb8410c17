"""ONNX Runtime: the item and user towers exported into the bundle.

Their input and output names and shapes are the contract in :mod:`bundle.towers`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from bundle import towers as names
from bundle.text_fields import tokenize_fields
from bundle.tokenize import load_tokenizer
from service.stages import timed


def providers() -> list[str]:
    """CUDA when this onnxruntime build has it, CPU otherwise (chosen at run time)."""
    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in available] or available


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Requests run in parallel threads already; one intra-op thread each avoids oversubscription.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=providers())


def _dim(session: ort.InferenceSession, name: str, axis: int, outputs: bool = False) -> int | None:
    args = session.get_outputs() if outputs else session.get_inputs()
    shape = next(a.shape for a in args if a.name == name)
    return shape[axis] if isinstance(shape[axis], int) else None


class ItemTower:
    """Modality features -> (item embedding, history state)."""

    def __init__(self, path: Path, threads: int = 1):
        self._session = _session(path, threads)
        inputs = {i.name for i in self._session.get_inputs()}
        if inputs != set(names.ITEM_INPUTS):
            raise ValueError(f"{path}: item tower inputs are {sorted(inputs)}, "
                             f"expected {sorted(names.ITEM_INPUTS)}")
        self.feature_dim = _dim(self._session, names.FEATURES, 1)
        self.state_dim = _dim(self._session, names.HISTORY_STATE, 1, outputs=True)

    def __call__(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = np.ascontiguousarray(features, dtype=np.float32)
        with timed("item_tower"):
            embedding, state = self._session.run(list(names.ITEM_OUTPUTS),
                                                 {names.FEATURES: features})
        return embedding.astype(np.float32, copy=False), state.astype(np.float32, copy=False)


class UserTower:
    """History states (+ stored user state) -> user embedding."""

    def __init__(self, path: Path, threads: int = 1):
        self._session = _session(path, threads)
        inputs = {i.name for i in self._session.get_inputs()}
        if inputs != set(names.USER_INPUTS):
            raise ValueError(f"{path}: user tower inputs are {sorted(inputs)}, "
                             f"expected {sorted(names.USER_INPUTS)}")
        self.state_dim = _dim(self._session, names.HISTORY_STATE, 2)
        self.user_state_dim = _dim(self._session, names.USER_STATE, 1)
        # a sequential tower takes exactly this many items, the newest last (left-padded)
        self.fixed_history = _dim(self._session, names.HISTORY_STATE, 1)

    def __call__(
        self, states: list[np.ndarray], user_state: np.ndarray | None, user_state_dim: int
    ) -> np.ndarray:
        """Embed one user from the history states of its items (oldest first)."""
        if self.fixed_history is not None:
            states = states[-self.fixed_history :]
        history = self.fixed_history or max(len(states), 1)  # one masked slot when empty
        stacked = np.zeros((1, history, self._state_width(states)), dtype=np.float32)
        mask = np.zeros((1, history), dtype=np.float32)
        start = history - len(states)  # right-aligned: the newest item is the last slot
        for position, state in enumerate(states, start=start):
            stacked[0, position] = state
            mask[0, position] = 1.0
        known = user_state is not None
        row = user_state if known else np.zeros(user_state_dim, dtype=np.float32)
        inputs = {
            names.HISTORY_STATE: stacked,
            names.HISTORY_MASK: mask,
            names.USER_STATE: np.asarray(row, dtype=np.float32).reshape(1, -1),
            names.USER_KNOWN: np.full((1, 1), 1.0 if known else 0.0, dtype=np.float32),
        }
        with timed("user_tower"):
            (embedding,) = self._session.run(list(names.USER_OUTPUTS), inputs)
        return embedding[0].astype(np.float32, copy=False)

    def _state_width(self, states: list[np.ndarray]) -> int:
        if states:
            return int(states[0].shape[0])
        if self.state_dim is None:
            raise ValueError("user tower has a dynamic state width and the history is empty")
        return self.state_dim


class TextTower:
    """Raw texts -> (item embedding, history state, the item tower's features): the text
    fields of :mod:`bundle.text_fields`, tokenised by :mod:`bundle.tokenize` with the
    bundle's own ``tokenizer.json``, through ``text_tower.onnx`` (or its int8 twin).

    Texts run in chunks of ``chunk_size`` items of similar length, each cut to its own
    longest field: padding is masked, so it only costs time, and MicroLens titles are
    short with a long tail (fields of 14 tokens on average, padded to 53 in a batch of 64).
    """

    def __init__(self, path: Path, tokenizer_folder: Path, max_tokens: int, threads: int = 1,
                 chunk_size: int = 16):
        self._session = _session(path, threads)
        inputs = {i.name for i in self._session.get_inputs()}
        if inputs != set(names.TEXT_INPUTS):
            raise ValueError(f"{path}: text tower inputs are {sorted(inputs)}, "
                             f"expected {sorted(names.TEXT_INPUTS)}")
        self.tokenizer = load_tokenizer(tokenizer_folder, max_tokens)
        self.chunk_size = chunk_size

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, mask = tokenize_fields(self.tokenizer, texts)
        lengths = mask.sum(-1).max(-1)  # an item's longest field
        order = np.argsort(lengths, kind="stable")
        parts = []
        with timed("text_tower"):
            for start in range(0, len(texts), self.chunk_size):
                rows = order[start : start + self.chunk_size]
                width = max(int(lengths[rows].max()), 1)
                parts.append(self._session.run(list(names.TEXT_OUTPUTS), {
                    names.INPUT_IDS: np.ascontiguousarray(ids[rows][..., :width]),
                    names.ATTENTION_MASK: np.ascontiguousarray(mask[rows][..., :width])}))
        back = np.argsort(order, kind="stable")  # the callers' order again
        return tuple(np.concatenate([p[k] for p in parts])[back].astype(np.float32, copy=False)
                     for k in range(3))  # type: ignore[return-value]
