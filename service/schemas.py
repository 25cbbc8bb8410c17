"""Request and response bodies: validated at the edge, every field described in /docs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

MAX_K = 1000
MAX_BATCH_HARD = 10_000  # schema cap; RECSYS_MAX_BATCH sets the (lower) configured limit
MAX_HISTORY = 1000
MAX_OFFSET = 1000  # a list page starts at most this far down (it ranks offset + k items)
MAX_EXCLUDE = 10_000
MAX_PAGE = 1000  # items a page of GET /items or GET /users/{id}/history holds at most
EXCLUDE_DESCRIPTION = ("Items never to return (besides everything the user has interacted "
                       "with), e.g. what the client shows already.")
OFFSET_DESCRIPTION = ("Skip this many of the best items: `offset=20&k=20` is the second page of "
                      "20 (the same ranking, reserved new-item slots included, as offset 0 with "
                      "k=40, cut).")

# One pattern, one meaning in every engine that reads it: the schema's (ECMA-262), pydantic's
# (Rust regex) and Python's ``re``. So no ``\s``/``\S``/``.``: their sets differ between engines
# (U+0085 is whitespace to Rust and Python, not to ECMA; U+FEFF only to ECMA; U+001C-U+001F only to
# Python). Explicit ranges instead: C0 controls and space, DEL, C1 controls and NBSP, '/', and
# every character any of the three calls whitespace.
ID_PATTERN = (r"^[^\x00-\x20\x7f-\xa0/\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
              r"\ufeff]+$")
ItemId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=ID_PATTERN),
    Field(description="External item id (no whitespace, '/' or control characters).",
          examples=["item_42"]),
]
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=ID_PATTERN),
    Field(description="External user id (no whitespace, '/' or control characters).",
          examples=["user_7"]),
]
# strict: JSON true/false are no numbers (lax mode would take them as 1.0/0.0)
Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
# Feature values are float32 in the towers: a finite JSON number beyond its range would become
# inf. Decision: refused (422), and the schema says so (each value's minimum/maximum), rather
# than clipped, which would change what the client sent without telling it. The same bound,
# inclusive, on both sides: numpy.finfo(numpy.float32).max, exactly. Checked once a vector (C
# speed: a 1024-item batch has ~10^5 values) rather than by a Python call per value.
FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32 = {"minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}


def _within_float32(values: list[float]) -> list[float]:
    if values and max(map(abs, values)) > FLOAT32_MAX:
        at = next(i for i, value in enumerate(values) if abs(value) > FLOAT32_MAX)
        raise ValueError(f"value {values[at]!r} at position {at} is outside the float32 range "
                         f"(|x| <= {FLOAT32_MAX!r})")
    return values


FeatureVector = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False, strict=True, json_schema_extra=_FLOAT32)]],
    AfterValidator(_within_float32),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_TEXT = 4096


class ItemIn(Strict):
    # features, or (for a text bundle) the raw text: exactly one of them
    # (exactly ``_one_input``: a null counts as absent, as it does there)
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["features"], "properties": {"features": {"type": "object"},
                                                  "text": {"type": "null"}}},
        {"required": ["text"], "properties": {"text": {"type": "string"},
                                              "features": {"type": "null"}}}]})
    item_id: ItemId
    features: dict[str, FeatureVector] | None = Field(
        None,
        description="Modality name -> feature vector. Every modality of the bundle's manifest "
        "(see GET /readyz, `modalities`) with exactly its dimension; finite numbers within the "
        "float32 range only.",
        examples=[{"image": [0.1, 0.2], "audio": [0.3, 0.4]}],
    )
    text: str | None = Field(
        None, min_length=1, max_length=MAX_TEXT,
        description="The item's raw text, for a text bundle (its manifest's `text_input`): "
        "embedded by the bundle's frozen text encoder and item tower.",
    )

    @model_validator(mode="after")
    def _one_input(self) -> ItemIn:
        if (self.features is None) == (self.text is None):
            raise ValueError("send the item's features or its text (exactly one)")
        return self


class ItemsIn(Strict):
    items: list[ItemIn] = Field(
        min_length=1,
        max_length=MAX_BATCH_HARD,
        description="Items to upsert by id (at most RECSYS_MAX_BATCH, default 1024, ids unique).",
    )


class ItemsOut(BaseModel):
    upserted: int = Field(description="Items written durably and now searchable.")
    model_version: str = Field(description="Bundle whose item tower embedded them.")


class ItemOut(BaseModel):
    item_id: str = Field(description="External item id.")
    source: Literal["bundle", "online"] = Field(
        description="`bundle`: part of the trained bundle; `online`: added through POST /items."
    )
    features: dict[str, list[float]] | None = Field(
        None, description="Stored features of an online item (bundle items keep none)."
    )
    updated_at: float | None = Field(None, description="Unix time of the last upsert (online).")
    model_version: str = Field(description="Bundle being served.")


class InteractionIn(Strict):
    user_id: UserId
    item_id: ItemId
    ts: Finite | None = Field(
        None, ge=0, description="Unix time of the event; the server time when omitted."
    )


class InteractionOut(BaseModel):
    user_id: str = Field(description="User of the logged interaction.")
    item_id: str = Field(description="Item of the logged interaction.")
    logged_at: float = Field(description="Unix time at which it was stored durably.")


class RecommendIn(Strict):
    # the rule of _someone, in the schema too: a user id, or a non-empty history
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
        {"required": ["history"], "properties": {"history": {"minItems": 1}}},
    ]})
    user_id: UserId | None = Field(
        None, description="Optional user id; a known user adds its stored history and state."
    )
    history: list[ItemId] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description="Fresh history, oldest first; the most recent RECSYS_HISTORY_LEN are used.",
    )
    k: int = Field(20, ge=1, le=MAX_K, description="Number of items to return.")
    exclude: list[ItemId] = Field(
        default_factory=list, max_length=MAX_EXCLUDE, description=EXCLUDE_DESCRIPTION
    )
    # strict: JSON false is no offset (lax mode would take it as 0)
    offset: int = Field(0, ge=0, le=MAX_OFFSET, strict=True, description=OFFSET_DESCRIPTION)

    @model_validator(mode="after")
    def _someone(self) -> RecommendIn:
        if self.user_id is None and not self.history:
            raise ValueError("send a user_id, a non-empty history, or both")
        return self


class ScoredItem(BaseModel):
    item_id: str = Field(description="External item id.")
    score: float = Field(description="Inner product of user and item vectors (or popularity).")
    reserved: bool = Field(
        False, description="The item fills a reserved new-item slot (the bundle's "
        "`serving.new_item_slots` share): it is in the list because of that policy, so its "
        "score can be below the next item's. A client that re-sorts by score keeps the policy "
        "by keeping reserved items at their positions.")
    new: bool = Field(
        False, description="A new item: without training interactions (the bundle's new "
        "items) or added online through POST /items.")


class RecommendationOut(BaseModel):
    user_id: str | None = Field(description="The user asked for, if any.")
    items: list[ScoredItem] = Field(description="Best first; never items the user has seen.")
    model_version: str = Field(description="Bundle version that produced the list.")
    cached: bool = Field(description="Whether the list was served from the Redis cache.")
    source: Literal["stored", "tower", "popular"] = Field(
        description="`stored`: the bundle's user vector; `tower`: the user tower over the "
        "history; `popular`: fallback for an unknown user."
    )


class ItemSummary(BaseModel):
    item_id: str = Field(description="External item id.")
    title: str | None = Field(
        description="The item's text (a text bundle's title, split into its fields by "
        "bundle/text_fields.py) when it was posted as text; null otherwise.")
    source: Literal["bundle", "online"] = Field(
        description="`bundle`: part of the trained bundle; `online`: added through POST /items.")
    new: bool = Field(description="Without training interactions, or added online.")


class ItemsPage(BaseModel):
    items: list[ItemSummary] = Field(description="Live items: the bundle's in its order, then "
                                     "online ones in the order they arrived.")
    total: int = Field(description="Items that match `q` (all live items without it).")
    offset: int = Field(description="Position of the first item of this page.")
    limit: int = Field(description="Largest page asked for.")


class HistoryItem(BaseModel):
    item_id: str = Field(description="External item id.")
    title: str | None = Field(description="The item's text when it was posted as text.")
    ts: float | None = Field(description="Unix time of a logged interaction (its `ts`); null "
                             "for the bundle's training history, which keeps no times.")


class UserHistory(BaseModel):
    user_id: str = Field(description="The user asked for.")
    items: list[HistoryItem] = Field(
        description="Newest first: the interactions logged online since the bundle's data "
        "cut-off, then the bundle's training history (newest first as the bundle orders it): "
        "what the user tower reads for this user.")


class ReloadIn(Strict):
    bundle: str | None = Field(
        None, max_length=4096, description="Bundle folder to load; RECSYS_BUNDLE when omitted."
    )


class ReloadOut(BaseModel):
    model_version: str = Field(description="Version now served.")
    previous_version: str | None = Field(description="Version served before the reload.")
    items: int = Field(description="Live items in the new index.")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="The process is up.")


class Modality(BaseModel):
    name: str = Field(description="Modality name, a key of `features`.")
    dim: int = Field(description="Exact length of its feature vector.")


class IndexReport(BaseModel):
    kind: str = Field(description="flat, ivf, ivfpq or hnsw.")
    params: dict[str, int] = Field(description="nlist, nprobe, pq_bytes, m, efSearch, as built.")
    recall: float | None = Field(description="Recall@100 against exact search measured on a "
                                 "sample of the bundle's users at load; null for exact search.")
    recall_target: float | None = Field(description="RECSYS_INDEX_RECALL when calibrated.")
    build_s: float = Field(description="Seconds to build and calibrate the index.")
    reason: str = Field(description="Why this kind.")


class Ready(BaseModel):
    ready: bool = Field(description="Bundle loaded, index built and store reachable, and "
                        "RECSYS_BUNDLE not naming a bundle that failed to load for longer than "
                        "RECSYS_BUNDLE_FAILURE_GRACE_S.")
    reason: str | None = Field(
        None, description="Why not ready, or (while ready) what will make it so; null when all "
        "is well.")
    model_version: str | None = Field(description="Bundle being served.")
    modalities: list[Modality] = Field(description="Expected item features, in order.")
    index_items: int = Field(description="Live items in the index.")
    index_type: str = Field(description="flat, ivf, ivfpq or hnsw: the kind serving (with "
                            "RECSYS_INDEX_TYPE=auto, the one chosen for this catalogue).")
    index_device: str = Field(description="cpu or gpu.")
    index: IndexReport | None = Field(None, description="How the loaded bundle's index was "
                                      "chosen and built; null before a bundle loads.")
    store: bool = Field(description="The SQL store answered.")
    redis: Literal["up", "down", "disabled"] = Field(description="Cache state (informational).")
