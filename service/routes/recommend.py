from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from service import schemas
from service.deps import ServiceDep
from service.operations import RecommendationService
from service.routes import BAD_BODY

JSON = "application/json"

router = APIRouter(prefix="/recommend", tags=["recommend"])
NOT_FOUND = {404: {"description": "Unknown user without history (unless popular fallback), "
                               "or a history item the service does not know."}}


@router.get("/{user_id}", summary="Recommend for a user",
            response_model=schemas.RecommendationOut, responses=NOT_FOUND)
async def recommend_user(
    request: Request,
    user_id: Annotated[str, Path(description="External user id.", max_length=256)],
    k: Annotated[int, Query(ge=1, le=schemas.MAX_K, description="Number of items.")] = 20,
    exclude: Annotated[list[schemas.ItemId] | None, Query(
        max_length=schemas.MAX_EXCLUDE,
        description=schemas.EXCLUDE_DESCRIPTION + " Repeat it: `?exclude=a&exclude=b`.")] = None,
    offset: Annotated[int, Query(ge=0, le=schemas.MAX_OFFSET,
                                 description=schemas.OFFSET_DESCRIPTION)] = 0,
) -> Response:
    """Top-k items for a user, excluding everything the user has interacted with."""
    # The hottest route takes the service from the app state itself: a dependency costs
    # ~40 us a request in FastAPI's resolver (measured), as much as the Redis GET of a hit.
    service: RecommendationService = request.app.state.service
    return Response(await service.recommend_user(user_id, k, exclude or [], offset),
                    media_type=JSON)


@router.post("", summary="Recommend for a history",
             response_model=schemas.RecommendationOut, responses={**NOT_FOUND, **BAD_BODY})
async def recommend(body: schemas.RecommendIn, service: ServiceDep) -> Response:
    """Top-k for a fresh history and/or a user id, through the user tower."""
    return Response(await service.recommend(body), media_type=JSON)
