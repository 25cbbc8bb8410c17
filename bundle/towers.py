"""The ONNX serving towers' input and output names and shapes (export writes them, the
service checks them).

``item_tower.onnx``  ``features`` [B, F] (raw modalities concatenated in manifest order) ->
                     ``embedding`` [B, d] and ``history_state`` [B, S]: how the model embeds an
                     item that has no interactions, and what a user tower aggregates for it.
``user_tower.onnx``  ``history_state`` [B, H, S], ``history_mask`` [B, H] (1 = real item),
                     ``user_state`` [B, U0] (a known user's stored state), ``user_known`` [B, 1]
                     -> ``embedding`` [B, d]: the user over that history, starting from the
                     stored state or from the learned unknown-user vector.
``text_tower.onnx``  ``input_ids``, ``attention_mask`` [B, M, T] (int64; M text fields, each
                     tokenised to T tokens) -> ``embedding`` [B, d], ``history_state`` [B, S]
                     and ``features`` [B, F]: the item tower of a text bundle on raw text, and
                     the item tower's input it computed (stored like posted features).
"""

from __future__ import annotations

FEATURES = "features"
EMBEDDING = "embedding"
HISTORY_STATE = "history_state"
HISTORY_MASK = "history_mask"
USER_STATE = "user_state"
USER_KNOWN = "user_known"

ITEM_INPUTS = (FEATURES,)
ITEM_OUTPUTS = (EMBEDDING, HISTORY_STATE)
USER_INPUTS = (HISTORY_STATE, HISTORY_MASK, USER_STATE, USER_KNOWN)
USER_OUTPUTS = (EMBEDDING,)

# Symbolic axes of every tensor ("batch": rows of a call; "history": items of a user).
ITEM_AXES: dict[str, dict[int, str]] = {
    FEATURES: {0: "batch"},
    EMBEDDING: {0: "batch"},
    HISTORY_STATE: {0: "batch"},
}
USER_AXES: dict[str, dict[int, str]] = {
    HISTORY_STATE: {0: "batch", 1: "history"},
    HISTORY_MASK: {0: "batch", 1: "history"},
    USER_STATE: {0: "batch"},
    USER_KNOWN: {0: "batch"},
    EMBEDDING: {0: "batch"},
}

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TEXT_INPUTS = (INPUT_IDS, ATTENTION_MASK)
TEXT_OUTPUTS = (EMBEDDING, HISTORY_STATE, FEATURES)
TEXT_AXES: dict[str, dict[int, str]] = {
    INPUT_IDS: {0: "batch", 2: "tokens"},
    ATTENTION_MASK: {0: "batch", 2: "tokens"},
    EMBEDDING: {0: "batch"},
    HISTORY_STATE: {0: "batch"},
    FEATURES: {0: "batch"},
}
