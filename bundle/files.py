"""The file names of a bundle folder and the format version (nothing else knows them)."""

from __future__ import annotations

FORMAT_VERSION = 1

MANIFEST = "manifest.json"
WEIGHTS = "model.pt"  # torch weights: the training side only
USER_EMBEDDINGS = "user_embeddings.npy"
ITEM_EMBEDDINGS = "item_embeddings.npy"
USER_IDS = "user_ids.json"
ITEM_IDS = "item_ids.json"
INTERACTIONS = "interactions.npz"
TRAIN_HISTORY = "train_history.npz"
NEW_ITEMS = "new_items.json"
ITEM_TOWER = "item_tower.onnx"
USER_TOWER = "user_tower.onnx"
ITEM_STATES = "item_history_states.npy"
USER_STATES = "user_states.npy"
TEXT_TOWER = "text_tower.onnx"  # token ids -> item embedding (a text bundle)
TEXT_TOWER_INT8 = "text_tower_int8.onnx"  # the same, the frozen encoder's weights in int8
TOKENIZER = "tokenizer.json"  # the text tower's tokenizer (the `tokenizers` format)
HISTORY = "training_history.json"  # per-epoch history, timings, final report (training side)
CURVE = "training_curve.png"  # the training curve drawn from HISTORY

REQUIRED = (USER_EMBEDDINGS, ITEM_EMBEDDINGS, USER_IDS, ITEM_IDS, INTERACTIONS)
