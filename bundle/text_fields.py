"""How an item's raw text becomes the text fields of a text bundle (shared by training, which
encodes the fields into cached states, and the service, which tokenises them for the text
tower): one rule, so both sides see the same fields.

``title_fields``: the caption is the text before the first ``#``, the hashtags everything after
it with the ``#`` marks removed (MicroLens-50K: 76% of titles have both; a missing field is
the empty text). A tag that runs on into prose stays in the hashtag field: the titles have no
delimiter that says where it ends.
"""

from __future__ import annotations

FIELDS = ("caption", "hashtags")


def split_title(title: str) -> tuple[str, str]:
    """``(caption, hashtags)`` of one title."""
    caption, _, tags = title.partition("#")
    return caption.strip(), " ".join(tags.replace("#", " ").split())
