"""Run-time device choice: CUDA when present and asked for, CPU otherwise."""

from __future__ import annotations

import torch


def choose_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA if available, else CPU; ``cuda`` without a GPU is a clear error."""
    requested = requested.lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available (use auto or cpu)")
    if requested not in ("cpu",) and not requested.startswith("cuda"):
        raise ValueError(f"unknown device {requested!r}: use auto, cpu or cuda[:N]")
    return torch.device(requested)
