from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service import schemas
from service.deps import RecommenderDep

router = APIRouter(prefix="/recommend", tags=["recommend"])
NOT_FOUND = {404: {"description": "Unknown user without history (unless popular fallback)."}}


@router.get("/{user_id}", response_model=schemas.RecommendationOut, responses=NOT_FOUND)
def recommend_user(
    recommender: RecommenderDep,
    user_id: Annotated[str, Path(description="External user id.", max_length=256)],
    k: Annotated[int, Query(ge=1, le=schemas.MAX_K, description="Number of items.")] = 20,
) -> schemas.RecommendationOut:
    """Top-k items for a user, excluding everything the user has interacted with."""
    return recommender.recommend_user(user_id, k)


@router.post("", response_model=schemas.RecommendationOut, responses=NOT_FOUND)
def recommend(body: schemas.RecommendIn, recommender: RecommenderDep) -> schemas.RecommendationOut:
    """Top-k for a fresh history and/or a user id, through the user tower."""
    return recommender.recommend(body)
