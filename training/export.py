"""Export a trained model's serving towers to ONNX and add them to its bundle.

The contract with the service (names fixed in :mod:`training.bundle`):

``item_tower.onnx``  ``features`` [B, F] (modalities concatenated in manifest order) ->
                     ``embedding`` [B, d] and ``history_state`` [B, S]. For MetaMMF_GCN this is
                     the new-item path the model was trained for: fusion -> [e_m ; unknown ID]
                     -> the GCN self path; the history state is the item's layer 0..L-1
                     embeddings concatenated (S = L * d), what a user update aggregates.
``user_tower.onnx``  ``history_state`` [B, H, S], ``history_mask`` [B, H] (1 = real item),
                     ``user_state`` [B, d] (a known user's e_u^(0)), ``user_known`` [B, 1] ->
                     ``embedding`` [B, d]: the user side of eq. 18 over the history, starting
                     from the stored e_u^(0) or from the learned unknown-user vector.

For a known user whose history is exactly its training items, the user tower reproduces the
trained model's final user vector (the parity tests check this), so the same code serves stored
users, users with fresh interactions and anonymous histories.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.metammf import FusionGCN
from training import bundle as bundle_format
from training.checkpoint import load_checkpoint

OPSET = 17
EXPORTABLE = ("metammf_gcn", "early_gcn", "late_gcn", "hybrid_gcn")


class ExportError(RuntimeError):
    """The model cannot be exported as serving towers."""


class ItemTower(nn.Module):
    """features -> (final embedding, history state) for items with no interactions."""

    def __init__(self, model: FusionGCN) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.model.new_item_layers(features)
        return self.model.read_out(layers), torch.cat(layers[:-1], dim=1)


class UserTower(nn.Module):
    """(history states, mask, stored e_u^(0), known flag) -> final user embedding (eq. 18)."""

    def __init__(self, model: FusionGCN) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        history_state: torch.Tensor,
        history_mask: torch.Tensor,
        user_state: torch.Tensor,
        user_known: torch.Tensor,
    ) -> torch.Tensor:
        dim, sage = self.model.embed_dim, self.model.sage
        users = [user_known * user_state + (1.0 - user_known) * self.model.unknown_user]
        weights = history_mask / history_mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        for layer in range(self.model.num_layers):
            layer_states = history_state[:, :, layer * dim : (layer + 1) * dim]
            neighbour_mean = torch.einsum("bh,bhd->bd", weights, layer_states)
            users.append(sage.user_step(layer, users[-1], neighbour_mean))
        return self.model.read_out(users)


def serving_states(model: FusionGCN) -> tuple[np.ndarray, np.ndarray]:
    """``(item history states [I, L*d], user e_u^(0) [U, d])`` of the trained graph."""
    model.eval()
    with torch.no_grad():
        layers = model.all_layers()
        item_states = torch.cat([items for _, items in layers[:-1]], dim=1)
        return item_states.cpu().numpy(), layers[0][0].cpu().numpy()


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


def tower_onnx(model: FusionGCN) -> tuple[bytes, bytes]:
    """The ONNX bytes of the item and the user tower, both with dynamic batch axes."""
    model = model.cpu().eval()
    dim, states = model.embed_dim, model.embed_dim * model.num_layers
    item = _onnx_bytes(
        ItemTower(model),
        (torch.zeros(2, model.feature_dim),),
        ["features"],
        ["embedding", "history_state"],
        {"features": {0: "batch"}, "embedding": {0: "batch"}, "history_state": {0: "batch"}},
    )
    user = _onnx_bytes(
        UserTower(model),
        (torch.zeros(2, 3, states), torch.ones(2, 3), torch.zeros(2, dim), torch.ones(2, 1)),
        ["history_state", "history_mask", "user_state", "user_known"],
        ["embedding"],
        {
            "history_state": {0: "batch", 1: "history"},
            "history_mask": {0: "batch", 1: "history"},
            "user_state": {0: "batch"},
            "user_known": {0: "batch"},
            "embedding": {0: "batch"},
        },
    )
    return item, user


def can_export(model_name: str) -> bool:
    return model_name in EXPORTABLE


def export_bundle(bundle_dir: str | Path) -> None:
    """Add both towers and the per-item / per-user states to an existing bundle, atomically."""
    bundle_dir = Path(bundle_dir)
    manifest = bundle_format.read_manifest(bundle_dir)
    model, _ = load_checkpoint(bundle_dir / bundle_format.WEIGHTS)
    if not isinstance(model, FusionGCN):
        raise ExportError(
            f"{manifest.get('model')}: only the fused GCN models ({', '.join(EXPORTABLE)}) "
            "have serving towers; this bundle keeps embeddings only"
        )
    item_states, user_states = serving_states(model)
    item_onnx, user_onnx = tower_onnx(model)
    bundle_format.add_files(
        bundle_dir,
        {
            bundle_format.ITEM_TOWER: lambda p: p.write_bytes(item_onnx),
            bundle_format.USER_TOWER: lambda p: p.write_bytes(user_onnx),
            bundle_format.ITEM_STATES: lambda p: np.save(p, item_states.astype(np.float32)),
            bundle_format.USER_STATES: lambda p: np.save(p, user_states.astype(np.float32)),
        },
        towers={
            "feature_dim": model.feature_dim,
            "history_state_dim": int(item_states.shape[1]),
            "user_state_dim": int(user_states.shape[1]),
            "opset": OPSET,
        },
    )
