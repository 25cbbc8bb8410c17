from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service import catalog, schemas
from service.deps import ServiceDep

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/{user_id}/history", response_model=schemas.UserHistory,
            responses={404: {"description": "A user the service knows nothing about."}})
def user_history(
    service: ServiceDep,
    user_id: Annotated[str, Path(description="External user id.", max_length=256)],
    limit: Annotated[int, Query(ge=1, le=schemas.MAX_PAGE, description="Most items.")] = 20,
) -> schemas.UserHistory:
    """The user's history as the service uses it, newest first: interactions logged online,
    then the bundle's training history."""
    return catalog.user_history(service, user_id, limit)
