from __future__ import annotations

from fastapi import APIRouter, Path, Response, status

from service import schemas
from service.deps import ApiKey, ServiceDep
from service.routes import BAD_BODY, UNAUTHORIZED

router = APIRouter(prefix="/items", tags=["items"])
ItemPath = Path(description="External item id.", max_length=256)
NOT_FOUND = {404: {"description": "Unknown or deleted item."}}


@router.post("", dependencies=[ApiKey], response_model=schemas.ItemsOut,
             responses={**BAD_BODY, **UNAUTHORIZED})
def upsert_items(body: schemas.ItemsIn, service: ServiceDep) -> schemas.ItemsOut:
    """Validate, embed with the item tower, store durably, then make searchable (upsert)."""
    return service.upsert_items(body.items)


@router.get("/{item_id}", response_model=schemas.ItemOut, responses=NOT_FOUND)
def get_item(service: ServiceDep, item_id: str = ItemPath) -> schemas.ItemOut:
    return service.get_item(item_id)


@router.delete("/{item_id}", dependencies=[ApiKey], status_code=status.HTTP_204_NO_CONTENT,
               responses={**NOT_FOUND, **UNAUTHORIZED})
def delete_item(service: ServiceDep, item_id: str = ItemPath) -> Response:
    """Delete durably; the item never appears in a response after this returns."""
    service.delete_item(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
