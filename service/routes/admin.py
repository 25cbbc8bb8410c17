from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body

from service import schemas
from service.deps import ApiKey, ServiceDep
from service.errors import Forbidden
from service.routes import BAD_BODY, UNAUTHORIZED

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[ApiKey],
                   responses={**BAD_BODY, **UNAUTHORIZED})


@router.post("/reload", summary="Reload the bundle", response_model=schemas.ReloadOut,
             responses={403: {"description": "The folder is outside RECSYS_RELOAD_ROOT."},
                        422: {"description": "The bundle cannot be loaded; the old one stays."}})
def reload(
    service: ServiceDep, body: Annotated[schemas.ReloadIn | None, Body()] = None
) -> schemas.ReloadOut:
    """Load a bundle (inside the bundles root) and swap it in atomically; a failed load keeps
    the served one."""
    if body is not None and body.bundle is not None:
        root = service.settings.reload_boundary()
        if not Path(body.bundle).resolve().is_relative_to(root):
            raise Forbidden(f"only bundles inside {root} can be loaded")
    return service.reload(body.bundle if body else None)
