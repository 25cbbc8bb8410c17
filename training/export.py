"""Export a trained model's serving towers to ONNX and add them to its bundle.

The model describes its towers (:meth:`models.base.Recommender.serving_towers`); this module
only converts them and writes them with their states. The contract with the service, the
towers' input and output names and shapes, is :mod:`bundle.towers`.

For a known user whose history is exactly its training items, the user tower reproduces the
trained model's final user vector (the parity tests check this for every exportable model), so
the same code serves stored users, users with fresh interactions and anonymous histories.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import bundle as bundle_format
from bundle import towers as names
from models.base import ServingTowers
from training.checkpoint import load_checkpoint

OPSET = 17


class ExportError(RuntimeError):
    """The model cannot be exported as serving towers."""


def _onnx_bytes(
    module: nn.Module,
    args: tuple,
    names_in: list[str],
    names_out: list[str],
    dynamic: dict[str, dict[int, str]],
) -> bytes:
    buffer = io.BytesIO()
    # The TorchScript exporter: our graphs are static, and it needs no extra packages. Its
    # deprecation notice and the tracer's notes on constant shape checks are expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            args,
            buffer,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def tower_onnx(towers: ServingTowers) -> tuple[bytes, bytes]:
    """The ONNX bytes of the item and the user tower, both with dynamic batch axes."""
    states = int(towers.item_states.shape[1])
    user_dim = int(towers.user_states.shape[1])
    item = _onnx_bytes(
        towers.item_tower.cpu(),
        (torch.zeros(2, towers.feature_dim),),
        list(names.ITEM_INPUTS),
        list(names.ITEM_OUTPUTS),
        names.ITEM_AXES,
    )
    # a sequential user tower takes exactly max_history items (left-padded by the service):
    # its attention reshapes do not export with a symbolic history length
    history = towers.max_history or 3
    axes = names.USER_AXES if towers.max_history is None else {
        name: {k: v for k, v in axes.items() if v != "history"}
        for name, axes in names.USER_AXES.items()}
    user = _onnx_bytes(
        towers.user_tower.cpu(),
        (torch.zeros(2, history, states), torch.ones(2, history), torch.zeros(2, user_dim),
         torch.ones(2, 1)),
        list(names.USER_INPUTS),
        list(names.USER_OUTPUTS),
        axes,
    )
    return item, user


def export_bundle(bundle_dir: str | Path) -> None:
    """Add both towers and the per-item / per-user states to an existing bundle, atomically."""
    bundle_dir = Path(bundle_dir)
    manifest = bundle_format.read_manifest(bundle_dir)
    model, _ = load_checkpoint(bundle_dir / bundle_format.WEIGHTS)
    towers = model.cpu().eval().serving_towers()
    if towers is None:
        raise ExportError(
            f"{manifest.model}: this model has no feature path, so no serving towers; "
            "the bundle keeps its embeddings only"
        )
    item_states = towers.item_states.detach().cpu().numpy().astype(np.float32)
    user_states = towers.user_states.detach().cpu().numpy().astype(np.float32)
    item_onnx, user_onnx = tower_onnx(towers)
    bundle_format.add_files(
        bundle_dir,
        {
            bundle_format.ITEM_TOWER: lambda p: p.write_bytes(item_onnx),
            bundle_format.USER_TOWER: lambda p: p.write_bytes(user_onnx),
            bundle_format.ITEM_STATES: lambda p: np.save(p, item_states),
            bundle_format.USER_STATES: lambda p: np.save(p, user_states),
        },
        towers={
            "feature_dim": towers.feature_dim,
            "history_state_dim": int(item_states.shape[1]),
            "user_state_dim": int(user_states.shape[1]),
            "opset": OPSET,
            "max_history": towers.max_history,
        },
    )
