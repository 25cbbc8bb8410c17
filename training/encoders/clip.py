"""Image-text CLIP encoder from a local weights folder: projected text and image embeddings.

Embeddings are the raw projections (``text_projection`` / ``visual_projection`` of the pooled
output), not L2-normalised, so a caller can keep or drop the norm. They are computed from
``text_model`` / ``vision_model`` directly, which means the same across transformers versions
(``get_text_features`` changed its return type in v5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from training.encoders.spec import EncoderSpec

if TYPE_CHECKING:
    from tqdm import tqdm


class ClipEncoder:
    """A CLIP model, its tokenizer and image processor, all read from one folder."""

    def __init__(self, spec: EncoderSpec, folder: Path, batch_size: int = 64) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.spec = spec
        self.batch_size = batch_size
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.num_states = 1
        self.dim = int(self.model.config.projection_dim)
        positions = int(self.model.config.text_config.max_position_embeddings)
        self.max_length = min(spec.max_length, positions)

    def encode_text(self, texts: Sequence[str], progress: tqdm | None = None) -> np.ndarray:
        """float32 ``[len(texts), dim]``."""
        out = np.empty((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                tokens = self.tokenizer(
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                pooled = self.model.text_model(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                ).pooler_output
                out[start : start + len(batch)] = self.model.text_projection(pooled).numpy()
                if progress is not None:
                    progress.update(len(batch))
        return out

    def encode_images(
        self, images: Sequence[Image.Image | str | Path], progress: tqdm | None = None
    ) -> np.ndarray:
        """float32 ``[len(images), dim]``; paths are opened and converted to RGB."""
        out = np.empty((len(images), self.dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [_rgb(image) for image in images[start : start + self.batch_size]]
                pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
                pooled = self.model.vision_model(pixel_values=pixels).pooler_output
                out[start : start + len(batch)] = self.model.visual_projection(pooled).numpy()
                if progress is not None:
                    progress.update(len(batch))
        return out

    def encode(self, texts: Sequence[str], progress: tqdm | None = None) -> dict[str, np.ndarray]:
        """The cache's view: ``{"embed": float16 [len(texts), 1, dim]}``."""
        return {"embed": self.encode_text(texts, progress)[:, None, :].astype(np.float16)}


def _rgb(image: Image.Image | str | Path) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as opened:
        return opened.convert("RGB")
