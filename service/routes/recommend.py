from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from service import schemas
from service.deps import RecommenderDep
from service.routes import BAD_BODY, json_response

router = APIRouter(prefix="/recommend", tags=["recommend"])
NOT_FOUND = {404: {"description": "Unknown user without history (unless popular fallback)."}}


@router.get("/{user_id}", response_model=schemas.RecommendationOut, responses=NOT_FOUND)
async def recommend_user(
    recommender: RecommenderDep,
    user_id: Annotated[str, Path(description="External user id.", max_length=256)],
    k: Annotated[int, Query(ge=1, le=schemas.MAX_K, description="Number of items.")] = 20,
) -> Response:
    """Top-k items for a user, excluding everything the user has interacted with."""
    return json_response(await recommender.recommend_user(user_id, k))


@router.post("", response_model=schemas.RecommendationOut, responses={**NOT_FOUND, **BAD_BODY})
async def recommend(body: schemas.RecommendIn, recommender: RecommenderDep) -> Response:
    """Top-k for a fresh history and/or a user id, through the user tower."""
    return json_response(await recommender.recommend(body))
