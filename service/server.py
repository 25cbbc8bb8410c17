"""uvicorn, with deadlines on reading a request (what ``python -m service`` runs).

uvicorn (0.55) times out only an idle keep-alive connection, and only until its first byte:
``data_received`` cancels that timer, and no timer runs on a new connection at all. A client that
opens a connection and sends nothing, or half a request line, holds it (and a file descriptor)
for ever: measured, 200 of 200 such connections still open after 45 s. The service runs with
no proxy in front (deploy/), so the server enforces the deadlines itself:

- the request head (request line and headers) must be complete within ``header_timeout_s`` of
  the connection opening or of the previous response (pipelined requests included);
- the body within ``body_timeout_s`` of the head (a slow-body client is the same attack).

A deadline that passes closes the connection (with a 408 when bytes of a request came after the
deadline started). The guard is a subclass of uvicorn's own protocol: it watches ``self.cycle``
(the request being answered), which both of uvicorn's HTTP/1.1 protocols replace when a request
head is complete and whose ``more_body`` turns False when the body is, so it needs no parser
callbacks. A response being written is never cut: the deadlines cover reading only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Fastest
except ImportError:  # httptools is optional: uvicorn's pure-Python h11 protocol then
    _Fastest = H11Protocol  # type: ignore[assignment,misc]

TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
                    b"content-length: 25\r\nconnection: close\r\n\r\nrequest not sent in time\n")


class DeadlineMixin:
    """Request-reading deadlines for a uvicorn HTTP/1.1 protocol (see the module docstring)."""

    header_timeout_s = 10.0
    body_timeout_s = 60.0
    _deadline: asyncio.TimerHandle | None = None
    _partial = False  # bytes of a request arrived while the deadline ran

    # uvicorn's protocols define these; declared for the type checker
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm(self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        reading = cycle is not None and not cycle.response_complete and cycle.more_body
        if self._deadline is not None:
            self._partial = True
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():
            return
        if self.cycle is not cycle:  # a request head arrived: now its body, if it has one
            self._disarm()
            if self.cycle.more_body:
                self._arm(self.body_timeout_s)
        elif reading and not self.cycle.more_body:  # the body is complete
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        # the next request's head is due; not while a pipelined one is already being answered
        # (httptools queues pipelined requests in ``pipeline``; h11 starts them in the call above)
        if not self.transport.is_closing() and not getattr(self, "pipeline", None) and (
                self.cycle is None or self.cycle.response_complete):
            self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._partial = False
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            return  # the request is complete and being answered: never cut a response
        if self._partial and (cycle is None or cycle.response_complete):
            self.transport.write(TIMEOUT_RESPONSE)  # a head was started: say why
        self.transport.close()


def protocol(settings: Settings, base: type = _Fastest) -> type:
    """uvicorn's protocol class ``base`` with the deadlines of ``settings``."""
    return type(f"Deadline{base.__name__}", (DeadlineMixin, base), {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
    })


def serve(settings: Settings) -> None:
    uvicorn.run(
        "service.app:app", host=settings.host, port=settings.port,
        log_level=settings.log_level, log_config=None,  # logging: service.logs (JSON lines)
        access_log=settings.access_log, http=protocol(settings),
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.limit_concurrency or None,
    )
