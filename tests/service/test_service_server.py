"""The server's own deadlines (``service.server``): a connection that never completes a request
is closed, one that does is answered, on both of uvicorn's HTTP/1.1 protocols and in the real
``python -m service``."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.server import protocol
from service.settings import Settings
from tests.service.conftest import free_port

HEADER_S, BODY_S = 0.5, 0.8


async def echo(scope, receive, send) -> None:
    """A tiny ASGI app: reads the whole body, answers its length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=[HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def port(request) -> Iterator[int]:
    settings = Settings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S)
    config = uvicorn.Config(echo, host="127.0.0.1", port=free_port(), log_level="warning",
                            http=protocol(settings, request.param), timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield config.port
    server.should_exit = True
    thread.join(10)


def closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (at most ``limit``), and what it sent."""
    start, received = time.monotonic(), b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return float("inf"), received
    except ConnectionResetError:
        pass
    return time.monotonic() - start, received


def connect(port: int, payload: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    if payload:
        sock.sendall(payload)
    return sock


def test_a_half_sent_request_line_is_closed_with_408(port):
    with connect(port, b"GET /rec") as sock:
        seconds, received = closed_after(sock, 5)
    assert HEADER_S * 0.9 <= seconds <= HEADER_S + 1.0
    assert received.startswith(b"HTTP/1.1 408 ")


def test_a_dribbled_head_cannot_keep_the_connection(port):
    """Slowloris proper: a header line every 0.1 s does not move the deadline."""
    with connect(port, b"GET / HTTP/1.1\r\n") as sock:
        sock.settimeout(0.1)
        start, received = time.monotonic(), None
        while received is None and time.monotonic() - start < 5:
            try:
                sock.sendall(b"X-a: b\r\n")
                received = sock.recv(4096)  # the 408, or b"" once closed
            except TimeoutError:
                continue
            except OSError:
                received = b""
        assert received is not None and time.monotonic() - start <= HEADER_S + 1.0


def test_a_silent_connection_is_closed_without_a_response(port):
    with connect(port) as sock:
        seconds, received = closed_after(sock, 5)
    assert seconds <= HEADER_S + 1.0 and received == b""


def test_a_stalled_body_is_closed_after_the_body_deadline(port):
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    with connect(port, head + b"x" * 10) as sock:
        seconds, _ = closed_after(sock, 5)
    assert BODY_S * 0.9 <= seconds <= BODY_S + 1.0


def test_complete_requests_are_answered_and_the_deadline_restarts_after_each(port):
    with connect(port) as sock:
        sock.settimeout(5)
        for _ in range(3):  # keep-alive: each answer restarts the head deadline
            time.sleep(HEADER_S * 0.6)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            assert sock.recv(4096).endswith(b"\r\n\r\n3")
        # two pipelined requests, then half of a third: both answered, then closed (no 408
        # here: the half came before the deadline started, with the others)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET /")
        seconds, received = closed_after(sock, 5)
    assert received.count(b"HTTP/1.1 200 ") == 2
    assert seconds <= HEADER_S + 1.0


def test_a_slow_answer_is_not_cut_by_the_deadlines():
    async def slow(scope, receive, send) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(HEADER_S + BODY_S + 0.5)
            await echo(scope, receive, send)

    settings = Settings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S)
    config = uvicorn.Config(slow, host="127.0.0.1", port=free_port(), log_level="warning",
                            http=protocol(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        with connect(config.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
            sock.settimeout(10)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
def test_the_real_server_closes_idle_half_requests_within_the_header_timeout(live_server):
    server = live_server(RECSYS_HEADER_TIMEOUT_S="1", RECSYS_ACCESS_LOG="false")
    socks = [connect(server.port, b"GET /readyz HT") for _ in range(50)]
    try:
        start = time.monotonic()
        closed = [closed_after(sock, 5) for sock in socks]
        assert all(received.startswith(b"HTTP/1.1 408 ") for _, received in closed)
        assert time.monotonic() - start <= 1 + 1.5
    finally:
        for sock in socks:
            sock.close()
    with connect(server.port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")  # still serving
