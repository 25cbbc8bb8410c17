"""Tokenisation with the ``tokenizers`` package only, so turning text into ids never needs torch.

Training encodes titles with it and the service tokenises a text bundle's new items with it,
from the ``tokenizer.json`` the bundle ships: one function, the same ids on both sides (a test
checks them against transformers' own tokenizer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


def load_tokenizer(folder: Path, max_length: int) -> Tokenizer:
    """``folder/tokenizer.json`` truncating and padding every text to exactly ``max_length``."""
    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    pad_id, pad_token = _pad_token(tokenizer, Path(folder))
    tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def _pad_token(tokenizer: Tokenizer, folder: Path) -> tuple[int, str]:
    """The pad token the file itself declares, else the one in ``tokenizer_config.json``."""
    if tokenizer.padding:
        return int(tokenizer.padding["pad_id"]), str(tokenizer.padding["pad_token"])
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    token = config.get("pad_token")
    if isinstance(token, dict):  # older configs store an AddedToken
        token = token.get("content")
    pad_id = tokenizer.token_to_id(token) if token else None
    if pad_id is None:
        raise ValueError(f"{folder}: the tokenizer declares no usable pad token")
    return pad_id, token


def tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)``, both int64 ``[len(texts), max_length]``."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask
