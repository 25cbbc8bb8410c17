from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from service import catalog, schemas
from service.deps import ApiKey, ServiceDep
from service.routes import BAD_BODY, UNAUTHORIZED

router = APIRouter(prefix="/items", tags=["items"])
ItemPath = Path(description="External item id.", max_length=256)
NOT_FOUND = {404: {"description": "Unknown or deleted item."}}


@router.post("", summary="Add or update items",
             dependencies=[ApiKey], response_model=schemas.ItemsOut,
             responses={**BAD_BODY, **UNAUTHORIZED})
def upsert_items(body: schemas.ItemsIn, service: ServiceDep) -> schemas.ItemsOut:
    """Validate, embed with the item tower, store durably, then make searchable (upsert)."""
    return service.upsert_items(body.items)


@router.get("", summary="List and search items", response_model=schemas.ItemsPage)
def list_items(
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1,
                                 description="Position of the first item.")] = 0,
    limit: Annotated[int, Query(ge=1, le=schemas.MAX_PAGE, description="Page size.")] = 50,
    q: Annotated[str | None, Query(
        max_length=256, description="Only items whose id starts with it or whose title "
        "contains it (case-insensitive).")] = None,
) -> schemas.ItemsPage:
    """The live catalogue, paged: the bundle's items, then those added online."""
    return catalog.list_items(service, offset, limit, q)


@router.get("/{item_id}", summary="Get an item",
            response_model=schemas.ItemOut, responses=NOT_FOUND)
def get_item(service: ServiceDep, item_id: str = ItemPath) -> schemas.ItemOut:
    return service.get_item(item_id)


@router.delete("/{item_id}", summary="Delete an item",
               dependencies=[ApiKey], status_code=status.HTTP_204_NO_CONTENT,
               responses={**NOT_FOUND, **UNAUTHORIZED})
def delete_item(service: ServiceDep, item_id: str = ItemPath) -> Response:
    """Delete durably; the item never appears in a response after this returns."""
    service.delete_item(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
