"""How an item's raw text becomes the text fields of a text bundle (shared by training, which
encodes the fields into cached states, and the service, which tokenises them for the text
tower): one rule, so both sides see the same fields.

``title_fields``: the caption is the text before the first ``#``, the hashtags everything after
it with the ``#`` marks removed (MicroLens-50K: 76% of titles have both; a missing field is
the empty text). A tag that runs on into prose stays in the hashtag field: the titles have no
delimiter that says where it ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from bundle.tokenize import tokenize

FIELDS = ("caption", "hashtags")


def split_title(title: str) -> tuple[str, str]:
    """``(caption, hashtags)`` of one title."""
    caption, _, tags = title.partition("#")
    return caption.strip(), " ".join(tags.replace("#", " ").split())


def tokenize_fields(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int64 ``[len(texts), len(FIELDS), max_length]``: every
    text split into its fields, each field tokenised (the text tower's input)."""
    fields = zip(*map(split_title, texts), strict=True)
    encoded = [tokenize(tokenizer, list(field)) for field in fields]
    return np.stack([e[0] for e in encoded], 1), np.stack([e[1] for e in encoded], 1)
