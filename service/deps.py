"""Shared resources arrive through dependencies, so tests swap configuration, not components."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from service.errors import Forbidden
from service.operations import RecommendationService
from service.settings import Settings

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Required on writes (RECSYS_API_KEY); without a configured key writes are "
    "refused unless RECSYS_OPEN_WRITES is true.",
)


# Dependencies are ``async`` although they never wait: FastAPI runs sync ones in its thread
# pool, a thread hop per dependency per request (measured: a third of a cache hit's time).


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_service(request: Request) -> RecommendationService:
    return request.app.state.service


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[RecommendationService, Depends(get_service)]


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]
) -> None:
    """Writes need the key; with none configured they are refused, unless RECSYS_OPEN_WRITES
    opens them (local development): a forgotten or misspelled RECSYS_API_KEY never leaves a
    deployment writable by anyone."""
    if settings.api_key is None:
        if settings.open_writes:
            return
        raise Forbidden("writes are disabled: this service has no API key. Set RECSYS_API_KEY "
                        f"and send it in the {API_KEY_HEADER} header (or RECSYS_OPEN_WRITES=true "
                        "for local development only)")
    expected = settings.api_key.get_secret_value().encode()
    if key is None or not secrets.compare_digest(key.encode(), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"missing or wrong API key (header {API_KEY_HEADER})",
            headers={"WWW-Authenticate": "ApiKey"},
        )


ApiKey = Depends(require_api_key)
