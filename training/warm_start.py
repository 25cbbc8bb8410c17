"""Warm start: a new model begins from a trained bundle's weights where they still fit.

The nightly candidate's ID tables grow (new users and items are appended after the old ones,
and a retrained live bundle may order its own logged rows differently), so a parameter is
copied by what it means, not by position:

- a **user or item table** (named in the model's ``user_tables``/``item_tables``) is copied
  row by row through the external ids; rows the old model never saw keep their fresh
  initialisation;
- any other parameter of the same name and shape is copied whole (fusion weights, adapters,
  scales);
- everything else (a changed shape, a different model) keeps its initialisation and is
  reported.

Only parameters are copied: buffers (item features, the normalised graph) describe the new
data and must stay as built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

import bundle as bundle_format
from models.base import Recommender

log = logging.getLogger(__name__)


@dataclass
class WarmStart:
    """Which parameters a warm start copied (``rows``: table -> rows matched by id)."""

    copied: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {"copied": len(self.copied), "tables": self.rows, "skipped": self.skipped}


def _row_map(old_ids: list[str], new_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(new rows, old rows) of the ids both sides know."""
    old_row = {external: r for r, external in enumerate(old_ids)}
    pairs = [(r, old_row[external]) for r, external in enumerate(new_ids) if external in old_row]
    array = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return array[:, 0], array[:, 1]


def copy_weights(
    model: Recommender,
    old_state: dict[str, torch.Tensor],
    *,
    old_user_ids: list[str],
    old_item_ids: list[str],
    new_user_ids: list[str],
    new_item_ids: list[str],
) -> WarmStart:
    """Copy ``old_state`` into ``model``'s parameters in place (see the module docstring)."""
    report = WarmStart()
    maps = {"user": _row_map(old_user_ids, new_user_ids),
            "item": _row_map(old_item_ids, new_item_ids)}
    kind_of = {**{n: "user" for n in model.user_tables}, **{n: "item" for n in model.item_tables}}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            old = old_state.get(name)
            if old is None:
                report.skipped.append(name)
                continue
            old = old.to(device=parameter.device, dtype=parameter.dtype)
            if name in kind_of and old.shape[1:] == parameter.shape[1:]:
                new_rows, old_rows = maps[kind_of[name]]
                parameter[torch.as_tensor(new_rows)] = old[torch.as_tensor(old_rows)]
                report.rows[name] = len(new_rows)
                report.copied.append(name)
            elif old.shape == parameter.shape:
                parameter.copy_(old)
                report.copied.append(name)
            else:
                report.skipped.append(name)
    return report


def from_bundle(
    live: bundle_format.Bundle, model_name: str, new_user_ids: list[str], new_item_ids: list[str]
) -> Callable[[Recommender], WarmStart] | None:
    """The ``init_model`` hook of :func:`training.trainer.train` that warm-starts from the
    bundle ``live``, or None when it holds no weights of ``model_name``."""
    if not live.has(bundle_format.WEIGHTS):
        log.info("warm start: %s has no %s; training from scratch", live.path,
                 bundle_format.WEIGHTS)
        return None
    checkpoint = torch.load(live.file(bundle_format.WEIGHTS), map_location="cpu",
                            weights_only=True)
    if checkpoint["model"] != model_name:
        log.info("warm start: the live bundle is %s, the candidate %s; training from scratch",
                 checkpoint["model"], model_name)
        return None

    def init_model(model: Recommender) -> WarmStart:
        report = copy_weights(model, checkpoint["state_dict"],
                              old_user_ids=live.user_ids, old_item_ids=live.item_ids,
                              new_user_ids=new_user_ids, new_item_ids=new_item_ids)
        log.info("warm start from %s: %s", live.path, report.summary())
        return report

    return init_model
