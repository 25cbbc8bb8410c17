"""Feature layout: the modalities of a bundle concatenated in manifest order, as a string
(``"audio:128,image:128"``) that the service stores beside every online item's features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bundle.manifest import Modality


def layout_of(modalities: Sequence[Modality]) -> str:
    return ",".join(f"{m.name}:{m.dim}" for m in modalities)


def parse_layout(layout: str) -> list[Modality]:
    parts = [p.rsplit(":", 1) for p in layout.split(",") if p]
    return [Modality(name=name, dim=int(dim)) for name, dim in parts]


def relayout(vector: np.ndarray, layout: str, modalities: Sequence[Modality]) -> np.ndarray:
    """Features stored under an older layout, reordered for this bundle (KeyError if missing)."""
    parts, start = {}, 0
    for m in parse_layout(layout):
        parts[m.name] = vector[start : start + m.dim]
        start += m.dim
    for m in modalities:
        if parts[m.name].shape[0] != m.dim:
            raise KeyError(f"{m.name} has {parts[m.name].shape[0]} values, expected {m.dim}")
    return np.concatenate([parts[m.name] for m in modalities])
