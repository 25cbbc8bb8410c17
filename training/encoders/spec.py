"""What an encoder is, apart from where it is registered: :class:`EncoderSpec` (how to find and
run one frozen encoder, cheap: no torch import) and the :class:`Encoder` protocol a loaded one
follows. The encoder kinds (:mod:`training.encoders.text`, :mod:`training.encoders.clip`) import
this module, the registry imports them only when it loads one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from tqdm import tqdm

EncoderKind = Literal["text", "clip"]
POOLINGS: dict[str, tuple[str, ...]] = {"text": ("mean", "cls"), "clip": ("embed",)}
DEFAULT_MAX_LENGTH = 64
_REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "text": ("config.json", "tokenizer.json"),
    "clip": ("config.json", "preprocessor_config.json"),
}


class EncoderError(RuntimeError):
    """An encoder cannot be found, loaded or its cache is inconsistent."""


@dataclass(frozen=True)
class EncoderSpec:
    """How to find and run one frozen encoder; ``locate`` returns its local weights folder."""

    name: str
    kind: EncoderKind
    locate: Callable[[], Path]
    max_length: int = DEFAULT_MAX_LENGTH
    description: str = ""

    @property
    def poolings(self) -> tuple[str, ...]:
        return POOLINGS[self.kind]

    def folder(self) -> Path:
        """The weights folder, checked early so a missing file names the encoder, not a stack."""
        folder = Path(self.locate())
        missing = [f for f in _REQUIRED_FILES[self.kind] if not (folder / f).is_file()]
        if missing:
            raise EncoderError(f"encoder {self.name!r}: {folder} lacks {', '.join(missing)}")
        return folder


class Encoder(Protocol):
    """A loaded encoder: every pooling of every hidden state for a batch of texts."""

    spec: EncoderSpec
    num_states: int
    dim: int

    def encode(self, texts: Sequence[str], progress: tqdm | None = None) -> dict[str, np.ndarray]:
        """``{pooling: float16 [len(texts), num_states, dim]}`` for every pooling of the kind."""
        ...
