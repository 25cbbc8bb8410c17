"""Shared resources arrive through dependencies, so tests swap configuration, not components."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from service.operations import RecommendationService
from service.settings import Settings

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Required on mutating endpoints when RECSYS_API_KEY is set.",
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
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if key is None or not secrets.compare_digest(key.encode(), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"missing or wrong API key (header {API_KEY_HEADER})",
            headers={"WWW-Authenticate": "ApiKey"},
        )


ApiKey = Depends(require_api_key)
