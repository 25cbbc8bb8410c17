from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from service import schemas
from service.deps import ApiKey, RecommenderDep
from service.routes import BAD_BODY, UNAUTHORIZED

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[ApiKey],
                   responses={**BAD_BODY, **UNAUTHORIZED})


@router.post("/reload", response_model=schemas.ReloadOut,
             responses={422: {"description": "The bundle cannot be loaded; the old one stays."}})
def reload(
    recommender: RecommenderDep, body: Annotated[schemas.ReloadIn | None, Body()] = None
) -> schemas.ReloadOut:
    """Load a bundle and swap it in atomically; a failed load keeps the served one."""
    return recommender.reload(body.bundle if body else None)
