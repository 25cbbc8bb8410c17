from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import schemas
from service.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Health check", response_model=schemas.Health)
async def healthz() -> schemas.Health:
    """The process is up."""
    return schemas.Health(status="ok")


@router.get("/readyz", summary="Readiness check", response_model=schemas.Ready,
            responses={503: {"model": schemas.Ready, "description": "Not ready."}})
async def readyz(service: ServiceDep) -> JSONResponse:
    """Bundle loaded, index built, store reachable, and RECSYS_BUNDLE not naming a bundle that
    failed to load for longer than RECSYS_BUNDLE_FAILURE_GRACE_S (503 otherwise, `reason` says
    why); the served version and the Redis state reported. HEAD works like GET here and on
    every GET route."""
    ready = await service.readiness()
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: latency per route, cache, index size, ingest, model, Redis errors."""
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
