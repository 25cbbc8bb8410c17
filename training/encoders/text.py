"""Frozen BERT-style text encoder: every hidden state, mean- and CLS-pooled.

All ``num_hidden_layers + 1`` hidden states (embedding output first) are kept, because which
layer transfers best to recommendation is an empirical question (IISAN, CROSSAN use several);
computing them all in one pass costs no more than computing the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bundle.tokenize import load_tokenizer, tokenize
from models.text_tower import pool_states
from training.encoders.spec import EncoderSpec

if TYPE_CHECKING:
    from tqdm import tqdm


class HiddenStateEncoder:
    """A ``transformers`` encoder loaded offline, tokenised by ``tokenizers``."""

    def __init__(self, spec: EncoderSpec, folder: Path, batch_size: int = 64) -> None:
        from transformers import AutoModel

        self.spec = spec
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(folder, spec.max_length)
        self.model = AutoModel.from_pretrained(
            folder, local_files_only=True, output_hidden_states=True
        ).eval()
        self.num_states = int(self.model.config.num_hidden_layers) + 1
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], progress: tqdm | None = None) -> dict[str, np.ndarray]:
        """``{"mean", "cls"}`` -> float16 ``[len(texts), num_states, dim]``.

        Texts run longest first and each batch is cut to its longest text: padding is masked,
        so the states are those of fixed-length padding, at a fraction of the cost.
        """
        ids, mask = tokenize(self.tokenizer, texts)
        lengths = mask.sum(axis=1)
        order = np.argsort(-lengths, kind="stable")
        shape = (len(texts), self.num_states, self.dim)
        pooled = {"mean": np.empty(shape, np.float16), "cls": np.empty(shape, np.float16)}
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                width = max(int(lengths[rows].max()), 1)
                batch_mask = torch.from_numpy(mask[rows, :width])
                output = self.model(
                    input_ids=torch.from_numpy(ids[rows, :width]), attention_mask=batch_mask
                )
                states = torch.stack(output.hidden_states, dim=1)  # [B, states, tokens, dim]
                for pooling, out in pooled.items():
                    out[rows] = pool_states(states, batch_mask, pooling).numpy()
                if progress is not None:
                    progress.update(len(rows))
        return pooled
