"""The model bundle: the one contract between training and serving.

Training writes bundles through this package and the service reads them through it; it imports
neither torch nor anything of ``training`` or ``service``, so the serving image needs neither.

- :mod:`bundle.files`: the file names and the format version;
- :mod:`bundle.manifest`: the typed, versioned manifest (validated on write and on load);
- :mod:`bundle.io`: atomic writing, checksums, loading (:func:`load_bundle`);
- :mod:`bundle.towers`: the ONNX towers' input and output names and axes;
- :mod:`bundle.layout`: the raw-feature layout of the item tower;
- :mod:`bundle.serving_rules`: rules the bundle asks the service to apply (new-item slots);
- :mod:`bundle.text_fields`: how a raw text becomes a text bundle's fields;
- :mod:`bundle.tokenize`: the tokenizer both sides run (``tokenizers`` only).
"""

from bundle.files import (
    CURVE,
    FORMAT_VERSION,
    HISTORY,
    INTERACTIONS,
    ITEM_EMBEDDINGS,
    ITEM_IDS,
    ITEM_STATES,
    ITEM_TOWER,
    MANIFEST,
    NEW_ITEMS,
    TEXT_TOWER,
    TEXT_TOWER_INT8,
    TOKENIZER,
    TRAIN_HISTORY,
    USER_EMBEDDINGS,
    USER_IDS,
    USER_STATES,
    USER_TOWER,
    WEIGHTS,
)
from bundle.io import (
    Bundle,
    BundleError,
    add_files,
    load_bundle,
    read_manifest,
    sha256_of,
    verify,
    write_bundle,
)
from bundle.manifest import Manifest, Modality, Serving, Towers

__all__ = [
    "CURVE",
    "FORMAT_VERSION",
    "HISTORY",
    "INTERACTIONS",
    "ITEM_EMBEDDINGS",
    "ITEM_IDS",
    "ITEM_STATES",
    "ITEM_TOWER",
    "MANIFEST",
    "NEW_ITEMS",
    "TEXT_TOWER",
    "TEXT_TOWER_INT8",
    "TOKENIZER",
    "TRAIN_HISTORY",
    "USER_EMBEDDINGS",
    "USER_IDS",
    "USER_STATES",
    "USER_TOWER",
    "WEIGHTS",
    "Bundle",
    "BundleError",
    "Manifest",
    "Modality",
    "Serving",
    "Towers",
    "add_files",
    "load_bundle",
    "read_manifest",
    "sha256_of",
    "verify",
    "write_bundle",
]
