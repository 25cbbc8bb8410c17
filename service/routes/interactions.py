from __future__ import annotations

from fastapi import APIRouter, status

from service import schemas
from service.deps import ApiKey, ServiceDep
from service.routes import BAD_BODY, UNAUTHORIZED

router = APIRouter(prefix="/interactions", tags=["interactions"])


@router.post("", summary="Log an interaction",
             dependencies=[ApiKey], status_code=status.HTTP_201_CREATED,
             response_model=schemas.InteractionOut,
             responses={**BAD_BODY, **UNAUTHORIZED,
                        404: {"description": "The item is unknown or deleted."}})
def add_interaction(
    body: schemas.InteractionIn, service: ServiceDep
) -> schemas.InteractionOut:
    """Log durably (the nightly retraining reads it) and update the user's online history."""
    return service.add_interaction(body)
