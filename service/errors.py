"""Domain errors; ``app.py`` maps each to an HTTP status and a stable ``code``.

Every error body is ``{"detail": ..., "code": ...}``: ``detail`` for people (a sentence, or
FastAPI's list of problems for a 422), ``code`` for programs. The codes (``CODES`` by status,
and those below) are documented in docs/operations.md and never renamed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# code of an error answered with this status when nothing more specific applies
CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 409: "conflict",
    413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid",
    429: "too_many_requests", 500: "internal_error", 503: "not_ready",
}
INVALID_JSON = "invalid_json"  # 400: the body is not JSON
VALIDATION_ERROR = "validation_error"  # 422: the body or parameters do not fit the schema
LOAD_FAILED = "load_failed"  # 422: a bundle could not be loaded (the old one still serves)


def code_for(status: int) -> str:
    return CODES.get(status, f"http_{status}")


class NotFound(LookupError):
    """An unknown user or item (404)."""

    code = "not_found"


class Forbidden(PermissionError):
    """A request the configuration does not allow (403)."""

    code = "forbidden"


class NotReady(RuntimeError):
    """No bundle is loaded, or it lacks what the request needs (503)."""

    code = "not_ready"


class Invalid(ValueError):
    """A request that passed the schema but not the bundle's rules (422).

    ``errors`` use FastAPI's shape (``loc``, ``msg``, ``type``) so every 422 reads the same.
    """

    code = "invalid"

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(str(e["msg"]) for e in errors))
        self.errors = errors


def invalid(loc: tuple[str | int, ...], msg: str, value: Any = None) -> Invalid:
    return Invalid([{"loc": list(loc), "msg": msg, "type": "value_error", "input": value}])


def unreadable(path: Path, error: PermissionError) -> str:
    """What to do about a bundle this process may not read (bundles are written owner-only,
    0700: a container running as another uid cannot read a host-trained one)."""
    where = Path(error.filename or path)
    try:
        info = where.stat()
        owner = f"owner uid {info.st_uid}, mode {oct(info.st_mode & 0o777)}"
    except OSError:
        owner = "owner unknown"
    return (f"permission denied reading {where} as uid {os.getuid()} gid {os.getgid()} "
            f"({owner}): run the service as the bundle's owner, or `chmod -R a+rX` the bundle "
            "folder on the host")
