"""Save and rebuild a trained model (weights + what its constructor needs) as ``model.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.base import BipartiteGraph, Recommender
from models.registry import build_model


def save_checkpoint(
    model: Recommender,
    path: Path,
    *,
    name: str,
    graph: BipartiteGraph,
    item_features: torch.Tensor | None,
    modality_dims: list[int],
    hparams: dict[str, Any],
) -> None:
    torch.save(
        {
            "model": name,
            "hparams": hparams,
            "num_users": graph.num_users,
            "num_items": graph.num_items,
            "edge_index": graph.edge_index.cpu(),
            "item_features": None if item_features is None else item_features.cpu(),
            "modality_dims": modality_dims,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        },
        path,
    )


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[Recommender, dict]:
    """Rebuild the model of a checkpoint in eval mode; returns ``(model, checkpoint dict)``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    graph = BipartiteGraph(ckpt["num_users"], ckpt["num_items"], ckpt["edge_index"])
    model = build_model(
        ckpt["model"], graph, ckpt["item_features"], ckpt["modality_dims"], **ckpt["hparams"]
    )
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt
