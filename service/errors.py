"""Domain errors; ``app.py`` maps each to an HTTP status."""

from __future__ import annotations

from typing import Any


class NotFound(LookupError):
    """An unknown user or item (404)."""


class Forbidden(PermissionError):
    """A request the configuration does not allow (403)."""


class NotReady(RuntimeError):
    """No bundle is loaded, or it lacks what the request needs (503)."""


class Invalid(ValueError):
    """A request that passed the schema but not the bundle's rules (422).

    ``errors`` use FastAPI's shape (``loc``, ``msg``, ``type``) so every 422 reads the same.
    """

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(str(e["msg"]) for e in errors))
        self.errors = errors


def invalid(loc: tuple[str | int, ...], msg: str, value: Any = None) -> Invalid:
    return Invalid([{"loc": list(loc), "msg": msg, "type": "value_error", "input": value}])
