"""The typed manifest of a bundle: validated when a bundle is written and when it is read.

Every key has one type and one default here, so neither side reads keys with ``.get()``
fallbacks. Training-side records (``config``, ``dataset``, ``metrics``) stay free-form
mappings: the service never reads them. Unknown keys are refused, so a misspelt key fails
loudly instead of silently taking a default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bundle.files import FORMAT_VERSION


class Modality(BaseModel):
    """One block of the item tower's raw features, in manifest order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    dim: int = Field(gt=0)


class Serving(BaseModel):
    """Rules the bundle asks the service to apply (see :mod:`bundle.serving_rules`)."""

    model_config = ConfigDict(extra="forbid")

    new_item_slots: float = Field(0.0, ge=0.0, lt=1.0, description="reserved share of a list")


class Towers(BaseModel):
    """Shapes of the exported ONNX towers (present once a bundle is exported)."""

    model_config = ConfigDict(extra="forbid")

    feature_dim: int = Field(gt=0)
    history_state_dim: int = Field(gt=0)
    user_state_dim: int = Field(gt=0)
    opset: int = Field(gt=0)
    max_history: int | None = Field(
        None, gt=0, description="the user tower reads at most this many newest items (a "
        "sequential model's trained length); None: any number")


class TextInput(BaseModel):
    """A text bundle's item input: ``text_tower.onnx`` takes token ids of these fields."""

    model_config = ConfigDict(extra="forbid")

    fields: list[str] = Field(min_length=1, description="in the tower's field order")
    split: Literal["title_fields"] = Field(
        "title_fields", description="how a raw text becomes the fields (bundle.text_fields)")
    max_tokens: int = Field(gt=0, description="tokens per field (the tokenizer truncates)")
    encoder: str = Field(min_length=1, description="the frozen encoder inside the tower")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: Literal[1] = FORMAT_VERSION
    version: str = Field(min_length=1, description="unique name of this bundle's model")
    run_id: str | None = Field(
        None, description="the version the bundle had when it was trained: publishing renames "
        "it (version), this stays, so a published version traces back to its training run")
    created_at: float
    data_cutoff: float | None = Field(
        None, description="UNIX time of the training data; online events after it are replayed"
    )
    model: str = Field(min_length=1)
    embedding_dim: int = Field(gt=0)
    num_users: int = Field(ge=0)
    num_items: int = Field(ge=0)
    modalities: list[Modality] = []
    serving: Serving = Serving()
    towers: Towers | None = None
    text_input: TextInput | None = Field(
        None, description="present when the item tower also takes raw text (text_tower.onnx)")
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    # training-side records, free-form
    config: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_seconds: float | None = None

    @field_validator("files")
    @classmethod
    def _hex_digests(cls, files: dict[str, str]) -> dict[str, str]:
        for name, digest in files.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"{name}: {digest[:16]!r} is not a sha256 hex digest")
        return files

    @property
    def cutoff(self) -> float:
        """The moment after which store events are not in the bundle's data."""
        return self.created_at if self.data_cutoff is None else self.data_cutoff

    @property
    def feature_dim(self) -> int:
        return sum(m.dim for m in self.modalities)
