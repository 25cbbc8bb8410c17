from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError

from service import schemas
from service.deps import ServiceDep
from service.operations import RecommendationService
from service.routes import BAD_BODY

JSON = "application/json"

router = APIRouter(prefix="/recommend", tags=["recommend"])

# GET's `exclude` and `offset` are read here, not by FastAPI's parameter resolver: declared
# there they cost ~10% of a cache hit's throughput (benchmarks/serving.py --quick) even when
# absent. The same pydantic types validate them and write their OpenAPI schema, so the schema
# and the validation agree as they did.
_EXCLUDE = TypeAdapter(Annotated[list[schemas.ItemId], Field(max_length=schemas.MAX_EXCLUDE)])
_OFFSET = TypeAdapter(Annotated[int, Field(ge=0, le=schemas.MAX_OFFSET)])
LIST_PARAMETERS: list[dict[str, Any]] = [
    {"name": "exclude", "in": "query", "required": False, "style": "form", "explode": True,
     "description": schemas.EXCLUDE_DESCRIPTION + " Repeat it: `?exclude=a&exclude=b`.",
     "schema": _EXCLUDE.json_schema()},
    {"name": "offset", "in": "query", "required": False,
     "description": schemas.OFFSET_DESCRIPTION, "schema": {**_OFFSET.json_schema(), "default": 0}},
]


def list_options(request: Request) -> tuple[list[str], int]:
    """``exclude`` and ``offset`` of a GET, validated (422 in FastAPI's format otherwise)."""
    query = request.scope["query_string"]
    if b"exclude" not in query and b"offset" not in query:
        return [], 0  # the common request: nothing to parse
    params, errors = request.query_params, []
    exclude, offset = [], 0
    try:
        exclude = _EXCLUDE.validate_python(params.getlist("exclude"))
    except ValidationError as error:
        errors += [{**e, "loc": ("query", "exclude", *e["loc"])} for e in error.errors()]
    if "offset" in params:
        try:
            offset = _OFFSET.validate_python(params["offset"])
        except ValidationError as error:
            errors += [{**e, "loc": ("query", "offset", *e["loc"])} for e in error.errors()]
    if errors:
        raise RequestValidationError(errors)
    return exclude, offset
NOT_FOUND = {404: {"description": "Unknown user without history (unless popular fallback), "
                               "or a history item the service does not know."}}


@router.get("/{user_id}", summary="Recommend for a user",
            response_model=schemas.RecommendationOut, responses=NOT_FOUND,
            openapi_extra={"parameters": LIST_PARAMETERS})
async def recommend_user(
    request: Request,
    user_id: Annotated[str, Path(description="External user id.", max_length=256)],
    k: Annotated[int, Query(ge=1, le=schemas.MAX_K, description="Number of items.")] = 20,
) -> Response:
    """Top-k items for a user, excluding everything the user has interacted with."""
    # The hottest route takes the service from the app state itself: a dependency costs
    # ~40 us a request in FastAPI's resolver (measured), as much as the Redis GET of a hit.
    service: RecommendationService = request.app.state.service
    exclude, offset = list_options(request)
    return Response(await service.recommend_user(user_id, k, exclude, offset),
                    media_type=JSON)


@router.post("", summary="Recommend for a history",
             response_model=schemas.RecommendationOut, responses={**NOT_FOUND, **BAD_BODY})
async def recommend(body: schemas.RecommendIn, service: ServiceDep) -> Response:
    """Top-k for a fresh history and/or a user id, through the user tower."""
    return Response(await service.recommend(body), media_type=JSON)
