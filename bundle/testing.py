"""Tiny but real bundles for the service tests and the benchmarks (needs ``onnx``, a
development dependency: nothing at serving time imports this module).

The towers are small ONNX graphs built with ``onnx.helper`` and run by ONNX Runtime, following
the tower contract exactly:

* item tower: ``embedding = features @ W``, ``history_state = features @ Ws``;
* user tower: ``embedding = masked_mean(history_state) @ Wu + user_known * (user_state @ Wk)
  + (1 - user_known) * unknown``.

``FactoryBundle`` keeps every matrix so tests can compute the expected answers with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import scipy.sparse as sp
from onnx import TensorProto, helper, numpy_helper

import bundle as bundle_format

ITEM_STATES = bundle_format.ITEM_STATES
USER_STATES = bundle_format.USER_STATES
OPSET = 17


@dataclass
class FactoryBundle:
    path: Path
    version: str
    modalities: list[tuple[str, int]]
    item_ids: list[str]
    user_ids: list[str]
    features: np.ndarray  # [I, F], modalities concatenated in manifest order
    W: np.ndarray
    Ws: np.ndarray
    Wu: np.ndarray
    Wk: np.ndarray
    unknown: np.ndarray
    item_embeddings: np.ndarray
    item_states: np.ndarray
    user_states: np.ndarray
    user_embeddings: np.ndarray
    interactions: sp.csr_matrix
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)

    @property
    def feature_dim(self) -> int:
        return sum(dim for _, dim in self.modalities)

    def payload(self, features: np.ndarray) -> dict[str, list[float]]:
        """One feature row as the JSON ``features`` object of POST /items."""
        out, start = {}, 0
        for name, dim in self.modalities:
            out[name] = features[start : start + dim].astype(float).tolist()
            start += dim
        return out

    def random_features(self, n: int, seed: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.normal(size=(n, self.feature_dim)).astype(np.float32)

    def embed(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = features.astype(np.float32)
        return features @ self.W, features @ self.Ws

    def user_vector(self, states: Sequence[np.ndarray], user_row: int | None) -> np.ndarray:
        """The numpy twin of the user tower for one user."""
        mean = np.mean(states, axis=0) if len(states) else np.zeros(self.Ws.shape[1], np.float32)
        out = mean @ self.Wu
        if user_row is None:
            return out + self.unknown
        return out + self.user_states[user_row] @ self.Wk

    def trained_items(self, user_row: int) -> list[str]:
        row = self.interactions[user_row]
        return [self.item_ids[c] for c in row.indices.tolist()]


def make_bundle(
    path: str | Path,
    *,
    num_users: int = 20,
    num_items: int = 200,
    dim: int = 16,
    state_dim: int = 10,
    user_state_dim: int = 6,
    modalities: Sequence[tuple[str, int]] = (("audio", 8), ("image", 12)),
    per_user: int = 5,
    version: str = "v1",
    seed: int = 0,
    overwrite: bool = False,
    new_items: Sequence[str] | None = None,
    new_item_slots: float = 0.0,
) -> FactoryBundle:
    rng = np.random.default_rng(seed)
    modalities = list(modalities)
    feature_dim = sum(d for _, d in modalities)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.normal(size=(rows, cols)) / np.sqrt(rows)).astype(np.float32)

    W, Ws = matrix(feature_dim, dim), matrix(feature_dim, state_dim)
    Wu, Wk = matrix(state_dim, dim), matrix(user_state_dim, dim)
    unknown = rng.normal(size=dim).astype(np.float32) * 0.1
    features = rng.normal(size=(num_items, feature_dim)).astype(np.float32)
    item_embeddings, item_states = features @ W, features @ Ws
    user_states = rng.normal(size=(num_users, user_state_dim)).astype(np.float32)
    rows, cols = [], []
    for user in range(num_users):
        items = rng.choice(num_items, size=min(per_user, num_items), replace=False)
        rows += [user] * len(items)
        cols += sorted(items.tolist())
    interactions = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(num_users, num_items)
    )
    item_ids = [f"i{n}" for n in range(num_items)]
    user_ids = [f"u{n}" for n in range(num_users)]
    fb = FactoryBundle(
        Path(path), version, modalities, item_ids, user_ids, features, W, Ws, Wu, Wk, unknown,
        item_embeddings, item_states, user_states, np.empty((0, dim), np.float32),
        interactions, rng,
    )
    fb.user_embeddings = np.stack([
        fb.user_vector([item_states[c] for c in interactions[u].indices], u)
        for u in range(num_users)
    ]).astype(np.float32)

    item_tower, user_tower = item_tower_onnx(W, Ws), user_tower_onnx(Wu, Wk, unknown)
    bundle_format.write_bundle(
        path,
        manifest={
            "version": version,
            "model": "factory",
            "modalities": [{"name": n, "dim": d} for n, d in modalities],
            "serving": {"new_item_slots": new_item_slots},
        },
        user_embeddings=fb.user_embeddings,
        item_embeddings=item_embeddings,
        user_ids=user_ids,
        item_ids=item_ids,
        interactions=interactions,
        new_items=None if new_items is None else list(new_items),
        extra_files={
            bundle_format.ITEM_TOWER: lambda p: onnx.save(item_tower, str(p)),
            bundle_format.USER_TOWER: lambda p: onnx.save(user_tower, str(p)),
            ITEM_STATES: lambda p: np.save(p, item_states),
            USER_STATES: lambda p: np.save(p, user_states),
        },
        overwrite=overwrite,
    )
    return fb


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.17
    onnx.checker.check_model(model)
    return model


def item_tower_onnx(W: np.ndarray, Ws: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["embedding"]),
            helper.make_node("MatMul", ["features", "Ws"], ["history_state"]),
        ],
        "item_tower",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["B", W.shape[0]])],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", W.shape[1]]),
            helper.make_tensor_value_info("history_state", TensorProto.FLOAT, ["B", Ws.shape[1]]),
        ],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(Ws, "Ws")],
    )
    return _model(graph)


def user_tower_onnx(Wu: np.ndarray, Wk: np.ndarray, unknown: np.ndarray) -> onnx.ModelProto:
    state_dim, dim = Wu.shape
    nodes = [
        helper.make_node("Unsqueeze", ["history_mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["history_state", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["history_mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["denominator"]),
        helper.make_node("Div", ["summed", "denominator"], ["mean"]),
        helper.make_node("MatMul", ["mean", "Wu"], ["from_history"]),
        helper.make_node("MatMul", ["user_state", "Wk"], ["projected"]),
        helper.make_node("Mul", ["projected", "user_known"], ["from_user"]),
        helper.make_node("Sub", ["one", "user_known"], ["is_unknown"]),
        helper.make_node("Mul", ["is_unknown", "unknown"], ["from_unknown"]),
        helper.make_node("Add", ["from_history", "from_user"], ["partial"]),
        helper.make_node("Add", ["partial", "from_unknown"], ["embedding"]),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "user_tower",
        [
            helper.make_tensor_value_info("history_state", f, ["B", "H", state_dim]),
            helper.make_tensor_value_info("history_mask", f, ["B", "H"]),
            helper.make_tensor_value_info("user_state", f, ["B", Wk.shape[0]]),
            helper.make_tensor_value_info("user_known", f, ["B", 1]),
        ],
        [helper.make_tensor_value_info("embedding", f, ["B", dim])],
        initializer=[
            numpy_helper.from_array(Wu, "Wu"),
            numpy_helper.from_array(Wk, "Wk"),
            numpy_helper.from_array(unknown.reshape(1, dim), "unknown"),
            numpy_helper.from_array(np.ones((1, 1), np.float32), "one"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        ],
    )
    return _model(graph)


def features_for(factory: FactoryBundle, target: np.ndarray) -> np.ndarray:
    """Item features whose item-tower embedding is ``target`` (W has full column rank)."""
    return (target @ np.linalg.pinv(factory.W)).astype(np.float32)
