"""Response bodies built as bytes: a recommendation list is serialized once (when it is
ranked) and a cache hit is answered without parsing or validating it again."""

from __future__ import annotations

from collections.abc import Sequence

import pydantic_core

# value: b"<source>\n<items JSON>" ("recjson" held items without their reserved/new flags)
CACHE_KIND = "recjson2"


def items_json(hits: Sequence[tuple[str, float] | tuple[str, float, bool, bool]]) -> bytes:
    """``RecommendationOut.items`` as pydantic serializes it, from ``(item_id, score)`` or
    ``(item_id, score, reserved, new)`` entries (the flags default to false)."""
    return pydantic_core.to_json([
        {"item_id": h[0], "score": h[1], "reserved": len(h) > 2 and h[2],
         "new": len(h) > 3 and h[3]} for h in hits])


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
