"""Builds the app: settings -> service (store, cache, bundle) -> routers.

Run with ``uvicorn service.app:app`` or ``python -m service``; configure with ``RECSYS_*``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import Forbidden, Invalid, NotFound, NotReady
from service.metrics import Metrics
from service.operations import LoadError, RecommendationService
from service.routes import admin, health, interactions, items, recommend
from service.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """Multimodal recommendations from a trained bundle (ONNX towers + FAISS).

Mutating endpoints need the `X-API-Key` header when the service is configured with an API key.
Invalid payloads get 422 with the location and reason of every problem."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = RecommendationService(settings, metrics)
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
                  description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.openapi = lambda: openapi_for_bundle(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    # The recommendation routes join the app's own router: FastAPI (0.16x) dispatches an included
    # router through extra layers on every request, ~10% of a cache hit (measured with
    # benchmarks/serving.py --quick). They carry their prefix and tags already.
    app.router.routes.extend(recommend.router.routes)
    for router in (items.router, interactions.router, health.router, admin.router):
        app.include_router(router)

    def error(status: int):
        async def handler(_request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return handler

    app.add_exception_handler(NotFound, error(404))
    app.add_exception_handler(Forbidden, error(403))
    app.add_exception_handler(NotReady, error(503))
    app.add_exception_handler(LoadError, error(422))
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
    """Starlette's 405 names only the first route of a path: list every allowed method."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        allowed = {m for pattern, methods in _path_methods(request.app)
                   if pattern.fullmatch(request.url.path) for m in methods}
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
    return await http_exception_handler(request, exc)


def openapi_for_bundle(app: FastAPI) -> dict:
    """The OpenAPI schema made true for the served bundle, rebuilt when the bundle changes
    (generic before one is loaded): ``features`` has exactly the bundle's modalities with their
    dimensions, and every id example, nested ones included, is an id the bundle knows (a
    delete's example is the last item, so the other examples keep theirs)."""
    service = getattr(app.state, "service", None)
    model = service.model if service is not None else None
    version = model.version if model is not None else None
    if app.openapi_schema is not None and getattr(app.state, "openapi_version", 0) == version:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    if model is not None:
        users, items = model.bundle.user_ids[:1], model.bundle.item_ids[:2]
        _bundle_examples(schema, {"item_42": items[:1], "user_7": users[:1]})
        features = {m.name: [0.0] * m.dim for m in model.modalities}
        exact_features = {
            "type": "object", "additionalProperties": False, "required": list(features),
            "properties": {m.name: {"type": "array", "items": {"type": "number"},
                                    "minItems": m.dim, "maxItems": m.dim}
                           for m in model.modalities},
        }
        for name, component in schema.get("components", {}).get("schemas", {}).items():
            fields = component.get("properties", {})
            if name == "ItemIn":
                fields["features"] = {
                    "description": fields["features"].get("description", ""),
                    **exact_features, "examples": [features]}
                if model.text_tower is None:  # a feature bundle: features only, required
                    fields.pop("text", None)
                    component.pop("oneOf", None)
                    component["required"] = ["item_id", "features"]
            if name == "ItemsIn":  # the configured batch limit, not only the hard cap
                fields["items"]["maxItems"] = app.state.settings.max_batch
                # a repeated entry is refused; a repeated id with other features too (422),
                # which no JSON Schema keyword can say
                fields["items"]["uniqueItems"] = True
            examples = {"user_id": users, "history": [items], "exclude": [[]],
                        "item_id": ["new-item-1"] if name == "ItemIn" else items[:1]}
            for field, example in examples.items():
                if field in fields and example:
                    fields[field]["examples"] = example
        for method_of in schema.get("paths", {}).values():
            for method, operation in method_of.items():
                for parameter in operation.get("parameters", []) if isinstance(operation,
                                                                                 dict) else []:
                    if parameter.get("name") == "user_id" and users:
                        parameter["example"] = users[0]
                    if parameter.get("name") == "item_id" and items:
                        last = model.bundle.item_ids[-1]
                        parameter["example"] = last if method == "delete" else items[0]
    app.openapi_schema, app.state.openapi_version = schema, version
    return schema


def _bundle_examples(node: object, replace: dict[str, list[str]]) -> None:
    """Replace the id types' generic examples (``item_42``, ``user_7``) everywhere in a schema."""
    if isinstance(node, dict):
        examples = node.get("examples")
        if (isinstance(examples, list) and len(examples) == 1 and isinstance(examples[0], str)
                and examples[0] in replace):
            node["examples"] = replace[examples[0]]
        for value in node.values():
            _bundle_examples(value, replace)
    elif isinstance(node, list):
        for value in node:
            _bundle_examples(value, replace)


def _path_methods(app: FastAPI) -> list[tuple[re.Pattern[str], set[str]]]:
    """(path pattern, methods) of every documented path, from the app's own OpenAPI schema
    (public API; FastAPI's included routers no longer expose their routes' methods)."""
    if not hasattr(app.state, "path_methods"):
        app.state.path_methods = [
            (re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path))),
             {m.upper() for m in operations if m != "parameters"})
            for path, operations in app.openapi()["paths"].items()
        ]
    return app.state.path_methods


async def unprocessable(_request: Request, exc: Exception) -> JSONResponse:
    """422 listing every problem. Echoed inputs are kept only when small and JSON-safe:
    a NaN that was refused must not break the error response itself."""
    errors = exc.errors if isinstance(exc, Invalid) else exc.errors()  # type: ignore[attr-defined]
    for error in errors:
        if error.get("type") == "json_invalid":  # not JSON at all: 400, as documented
            reason = (error.get("ctx") or {}).get("error", "decode error")
            where = error.get("loc", ("body", "?"))[-1]
            return JSONResponse({"detail": f"the body is not valid JSON: {reason} at position "
                                           f"{where}"}, status_code=400)
    detail = []
    for error in jsonable_encoder(errors, custom_encoder={float: _finite_or_text}):
        value = error.pop("input", None)
        if isinstance(value, str | int | float | bool) and len(str(value)) <= 256:
            error["input"] = value
        detail.append(error)
    return JSONResponse({"detail": detail}, status_code=422)


def _finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


class BodyLimitMiddleware:
    """413 for a body larger than ``max_bytes``, before any of it is parsed: by its declared
    Content-Length, or (chunked uploads) as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received, refused = 0, False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # answer now; the app sees the client leave
                refused = True
                await self._refuse(send)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class LatencyMiddleware:
    """Latency histogram and status counts per route template (not per raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(scope["method"], route, status,
                                         time.perf_counter() - start)


app = create_app()  # logging is configured by whoever runs it (``python -m service``)
