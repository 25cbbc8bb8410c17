"""ONNX Runtime: the item and user towers exported into the bundle.

Contract (fixed by the training side's export):

* ``item_tower.onnx``: ``features`` float32 [B, F] (modalities concatenated in manifest order)
  -> ``embedding`` [B, d], ``history_state`` [B, S].
* ``user_tower.onnx``: ``history_state`` [B, H, S], ``history_mask`` [B, H] (1 = real item),
  ``user_state`` [B, U0], ``user_known`` [B, 1] -> ``embedding`` [B, d].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


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
        names = {i.name for i in self._session.get_inputs()}
        if names != {"features"}:
            raise ValueError(f"{path}: item tower inputs are {sorted(names)}, "
                             "expected ['features']")
        self.feature_dim = _dim(self._session, "features", 1)
        self.state_dim = _dim(self._session, "history_state", 1, outputs=True)

    def __call__(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = np.ascontiguousarray(features, dtype=np.float32)
        embedding, state = self._session.run(
            ["embedding", "history_state"], {"features": features}
        )
        return embedding.astype(np.float32, copy=False), state.astype(np.float32, copy=False)


class UserTower:
    """History states (+ stored user state) -> user embedding."""

    INPUTS = {"history_state", "history_mask", "user_state", "user_known"}

    def __init__(self, path: Path, threads: int = 1):
        self._session = _session(path, threads)
        names = {i.name for i in self._session.get_inputs()}
        if names != self.INPUTS:
            raise ValueError(f"{path}: user tower inputs are {sorted(names)}, "
                             f"expected {sorted(self.INPUTS)}")
        self.state_dim = _dim(self._session, "history_state", 2)
        self.user_state_dim = _dim(self._session, "user_state", 1)

    def __call__(
        self, states: list[np.ndarray], user_state: np.ndarray | None, user_state_dim: int
    ) -> np.ndarray:
        """Embed one user from the history states of its items (oldest first)."""
        history = max(len(states), 1)  # one masked slot for an empty history
        stacked = np.zeros((1, history, self._state_width(states)), dtype=np.float32)
        mask = np.zeros((1, history), dtype=np.float32)
        for position, state in enumerate(states):
            stacked[0, position] = state
            mask[0, position] = 1.0
        known = user_state is not None
        row = user_state if known else np.zeros(user_state_dim, dtype=np.float32)
        (embedding,) = self._session.run(
            ["embedding"],
            {
                "history_state": stacked,
                "history_mask": mask,
                "user_state": np.asarray(row, dtype=np.float32).reshape(1, -1),
                "user_known": np.full((1, 1), 1.0 if known else 0.0, dtype=np.float32),
            },
        )
        return embedding[0].astype(np.float32, copy=False)

    def _state_width(self, states: list[np.ndarray]) -> int:
        if states:
            return int(states[0].shape[0])
        if self.state_dim is None:
            raise ValueError("user tower has a dynamic state width and the history is empty")
        return self.state_dim
