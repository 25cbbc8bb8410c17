"""Builds the app: settings -> service (store, cache, bundle) -> routers.

Run with ``uvicorn service.app:app`` or ``python -m service``; configure with ``RECSYS_*``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    INVALID_JSON,
    LOAD_FAILED,
    VALIDATION_ERROR,
    Forbidden,
    Invalid,
    NotFound,
    NotReady,
    code_for,
)
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, HeadMiddleware, RequestMiddleware
from service.openapi import openapi_for_bundle
from service.operations import LoadError, RecommendationService
from service.routes import admin, docs, health, interactions, items, recommend, ui, users
from service.settings import Settings, unknown_variable_warnings
from service.stages import time_store_writes

log = logging.getLogger(__name__)

DESCRIPTION = """Multimodal recommendations from a trained bundle (ONNX towers + FAISS).

Writes (POST /items, DELETE /items/{id}, POST /interactions, POST /admin/reload) need the
`X-API-Key` header; a service configured without a key refuses them (403) unless
`RECSYS_OPEN_WRITES` opens them for local development. Invalid payloads get 422 with the location
and reason of every problem. Every error body carries a stable machine-readable `code` beside
`detail`, and every response an `X-Request-ID` (the client's, when sane, or a new one)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    if settings is None:  # from the environment: name what it holds that nothing reads
        settings = Settings()
        for warning in unknown_variable_warnings():
            log.warning("%s", warning)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = RecommendationService(settings, metrics)
        time_store_writes(service.store)  # recsys_stage_seconds{stage="store"}
        await run_in_threadpool(service.start)
        app.state.service = service
        polls = [
            asyncio.create_task(every(settings.bundle_poll_s, service.follow, "bundle")),
            asyncio.create_task(every(settings.feed_poll_s, service.follow_changes, "feed")),
        ]
        yield
        for poll in polls:
            poll.cancel()
        await service.close()

    app = FastAPI(title="Multimodal recommendation service", version="0.1.0",
                  description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # served without a CDN: routes/docs.py
    app.state.settings = settings
    app.state.metrics = metrics
    app.openapi = lambda: openapi_for_bundle(app)
    app.add_middleware(HeadMiddleware)  # innermost: the metric labels HEAD as HEAD
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMiddleware, metrics=metrics)  # outermost: ids on every answer
    # The recommendation routes join the app's own router: FastAPI (0.16x) dispatches an included
    # router through extra layers on every request, ~10% of a cache hit (measured with
    # benchmarks/serving.py --quick). They carry their prefix and tags already.
    app.router.routes.extend(recommend.router.routes)
    for router in (items.router, users.router, interactions.router, health.router,
                   admin.router):
        app.include_router(router)
    docs.install(app)  # /docs and /redoc with packaged assets
    ui.install(app)  # /ui and GET /ui/model

    def error(status: int, code: str | None = None):
        async def handler(_request: Request, exc: Exception) -> JSONResponse:
            body = {"detail": str(exc), "code": code or getattr(exc, "code", None)}
            return JSONResponse(body, status_code=status)
        return handler

    app.add_exception_handler(NotFound, error(404))
    app.add_exception_handler(Forbidden, error(403))
    app.add_exception_handler(NotReady, error(503))
    app.add_exception_handler(LoadError, error(422, LOAD_FAILED))
    app.add_exception_handler(Invalid, unprocessable)
    app.add_exception_handler(RequestValidationError, unprocessable)
    app.add_exception_handler(StarletteHTTPException, http_error)
    return app


async def every(seconds: float, work: Callable[[], object], name: str) -> None:
    """Run ``work`` in the thread pool every ``seconds`` (never when 0): the bundle poll (a
    published or rolled-back ``current`` link is served within it) and the change feed (the
    other replicas' writes are applied within it). Polling is the guarantee replicas rely on."""
    if seconds <= 0:
        return
    while True:
        await asyncio.sleep(seconds)
        try:
            await run_in_threadpool(work)
        except Exception:  # a poll must never die
            log.exception("%s poll failed", name)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer plus the status's ``code``; and Starlette's 405 names only the first
    route of a path: list every allowed method."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        allowed = {m for pattern, methods in _path_methods(request.app)
                   if pattern.fullmatch(request.url.path) for m in methods}
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSONResponse({"detail": exc.detail, "code": code_for(exc.status_code)},
                        status_code=exc.status_code, headers=exc.headers)


def _path_methods(app: FastAPI) -> list[tuple[re.Pattern[str], set[str]]]:
    """(path pattern, methods) of every documented path, from the app's own OpenAPI schema
    (public API; FastAPI's included routers no longer expose their routes' methods)."""
    if not hasattr(app.state, "path_methods"):
        app.state.path_methods = [
            (re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path))),
             _with_head({m.upper() for m in operations if m != "parameters"}))
            for path, operations in app.openapi()["paths"].items()
        ]
    return app.state.path_methods


def _with_head(methods: set[str]) -> set[str]:
    """HEAD is answered wherever GET is (``HeadMiddleware``), though the schema lists GET only."""
    return methods | {"HEAD"} if "GET" in methods else methods


async def unprocessable(_request: Request, exc: Exception) -> JSONResponse:
    """422 listing every problem. Echoed inputs are kept only when small and JSON-safe:
    a NaN that was refused must not break the error response itself."""
    errors = exc.errors if isinstance(exc, Invalid) else exc.errors()  # type: ignore[attr-defined]
    for error in errors:
        if error.get("type") == "json_invalid":  # not JSON at all: 400, as documented
            reason = (error.get("ctx") or {}).get("error", "decode error")
            where = error.get("loc", ("body", "?"))[-1]
            return JSONResponse({"detail": f"the body is not valid JSON: {reason} at position "
                                           f"{where}", "code": INVALID_JSON}, status_code=400)
    detail = []
    for error in jsonable_encoder(errors, custom_encoder={float: _finite_or_text}):
        value = error.pop("input", None)
        if isinstance(value, str | int | float | bool) and len(str(value)) <= 256:
            error["input"] = value
        detail.append(error)
    code = exc.code if isinstance(exc, Invalid) else VALIDATION_ERROR
    return JSONResponse({"detail": detail, "code": code}, status_code=422)


def _finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


app = create_app()  # logging is configured by whoever runs it (``python -m service``)
