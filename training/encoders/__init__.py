"""Item features from frozen foundation models, computed once and cached outside the repo.

``item_features(titles)`` gives float32 ``[n, 384]`` (MiniLM, mean pooling, last layer); the
registry, the cache layout and the encoder kinds are documented in their modules. Importing this
package does not import torch: only encoding a text that is not cached yet does.
"""

from bundle.tokenize import load_tokenizer, tokenize
from training.encoders.cache import cache_root, cached_states, item_features, text_key
from training.encoders.registry import (
    ENCODERS,
    Encoder,
    EncoderError,
    EncoderSpec,
    get_encoder_spec,
    load_encoder,
    register_encoder,
)

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderError",
    "EncoderSpec",
    "cache_root",
    "cached_states",
    "get_encoder_spec",
    "item_features",
    "load_encoder",
    "load_tokenizer",
    "register_encoder",
    "text_key",
    "tokenize",
]
