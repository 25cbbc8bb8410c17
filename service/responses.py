"""Response bodies built as bytes: a recommendation list is serialized once (when it is
ranked) and a cache hit is answered without parsing or validating it again."""

from __future__ import annotations

from collections.abc import Sequence

import pydantic_core

CACHE_KIND = "recjson"  # value: b"<source>\n<items JSON>" (the former "rec" held other JSON)


def items_json(hits: Sequence[tuple[str, float]]) -> bytes:
    """``RecommendationOut.items`` as pydantic serializes it."""
    return pydantic_core.to_json([{"item_id": i, "score": s} for i, s in hits])


def recommendation_json(
    user_id: str | None, version: str, cached: bool, source: bytes, items: bytes
) -> bytes:
    """The body of a ``schemas.RecommendationOut``, byte for byte what ``model_dump_json``
    writes (same field order, same encoder), from an items list serialized once: a cache hit
    neither parses nor validates it again."""
    return b"".join((
        b'{"user_id":', pydantic_core.to_json(user_id), b',"items":', items,
        b',"model_version":', pydantic_core.to_json(version),
        b',"cached":true,"source":"' if cached else b',"cached":false,"source":"',
        source, b'"}',
    ))
