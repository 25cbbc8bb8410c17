"""ASGI middleware: the request body limit (413 before reading), HEAD as GET, and around every
request its id, the latency metric and its log line."""

from __future__ import annotations

import itertools
import json
import os
import re
import time

import pydantic_core
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, stages
from service.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID = re.compile(r"[A-Za-z0-9\-._:@/+=]{1,128}")
INTERNAL = json.dumps({"detail": "internal server error", "code": "internal_error"}).encode()


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
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes",
                           "code": "payload_too_large"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class RequestMiddleware:
    """Around every request: its id (``X-Request-ID``: the client's when it is sane, else a new
    one; returned on every response and bound to every log line logged while answering), the
    latency histogram and status counts per route template (not per raw path), the per-stage
    timings' registry (``service.stages``), one log line, and a JSON 500 for an unhandled
    error. Outermost of the app's middleware, so 413s and error handlers' answers get the id."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        header = (REQUEST_ID_HEADER, request_id.encode())
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        recorder = stages.CURRENT.set(self.metrics)
        status, body, sent = 500, b"", False

        async def send_with_id(message: Message) -> None:
            nonlocal status, body, sent
            if message["type"] == "http.response.start":
                sent, status = True, message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif not body and _is_recommendation(scope):
                body = message.get("body", b"")
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            failure = error
            if not sent:  # the server would answer a bare 500 without the id
                await send_with_id({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(INTERNAL)).encode())]})
                await send_with_id({"type": "http.response.body", "body": INTERNAL})
            raise  # the server and the test client still see it
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(scope["method"], route, status, seconds)
            if route == "/readyz":
                self.metrics.ready.set(1 if status == 200 else 0)
            line = {"method": scope["method"], "route": route, "status": status,
                    "latency_ms": round(seconds * 1000, 3), "model_version": self.metrics.version,
                    "request_id": request_id}
            fields = recommendation_fields(body) if body else None
            if fields is not None:
                line["model_version"], line["source"], line["cache_hit"] = fields
            logs.request_line(line, failure)
            stages.CURRENT.reset(recorder)
            structlog.contextvars.reset_contextvars(**bound)


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's ``X-Request-ID`` when it is 1-128 characters of letters, digits and
    ``-._:@/+=``; None when absent or not sane (a new id is used instead)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            return text if REQUEST_ID.fullmatch(text) else None
    return None


_PREFIX = os.urandom(8).hex()  # this process's, so ids of replicas never collide
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """32 hex digits, unique: a random prefix per process and a counter (a uuid4 costs ~5 us,
    a tenth of a cached answer)."""
    return f"{_PREFIX}{next(_COUNTER):016x}"


def _is_recommendation(scope: Scope) -> bool:
    return getattr(scope.get("route"), "path", "").startswith("/recommend")


def recommendation_fields(body: bytes) -> tuple[str, str, bool] | None:
    """(model version, source, whether from the cache) of a recommendation body: its last
    top-level fields, read without parsing the item list (a ``"`` inside a JSON string is
    always escaped, so the key's first occurrence from the end is the top-level one)."""
    at = body.rfind(b',"model_version":')
    if at < 0:
        return None
    try:
        tail = pydantic_core.from_json(b"{" + body[at + 1:])
        return tail["model_version"], tail["source"], tail["cached"]
    except (ValueError, KeyError, TypeError):
        return None


class HeadMiddleware:
    """HEAD wherever GET is allowed (load balancers and uptime checks send it): answered by the
    GET route, with GET's status and headers (Content-Length included) and no body. FastAPI's
    routes declare GET only (Starlette's own add HEAD, FastAPI's do not), and routing it here
    keeps HEAD out of the OpenAPI schema. A HEAD where no GET is gets GET's 405."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        # a copy: the server reads the outer scope's "HEAD" when it sends the response
        inner = {**scope, "method": "GET"}

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(inner, receive, without_body)
        finally:  # what routing found, for the latency metric's route label and the log
            for key in ("route", "endpoint", "path_params"):
                if key in inner:
                    scope[key] = inner[key]
