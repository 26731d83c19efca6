"""The /metrics and /health server (worker/health_server.py) over real TCP connections,
including clients that misbehave."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio

from patient_sidekiq.worker import health_server
from patient_sidekiq.worker.health_server import MAX_CLIENTS, OpsServer, Reply, bind

calls: list[str] = []


def hello() -> Reply:
    calls.append("hello")
    return 200, "text/plain", b"hello\n"


def broken() -> Reply:
    raise RuntimeError("a bug in a route")


@pytest.fixture
async def port(nursery: trio.Nursery) -> AsyncIterator[int]:
    calls.clear()
    sockets = bind("127.0.0.1", 0)
    number = int(sockets[0].getsockname()[1])
    await nursery.start(OpsServer({"/hello": hello, "/broken": broken}).serve, sockets)
    return number


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` raw and read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def test_a_get_is_answered_and_the_connection_closed(port: int) -> None:
    reply = await exchange(port, b"GET /hello?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/plain" in head
    assert b"connection: close" in head
    assert body == b"hello\n"


async def test_head_has_no_body_and_other_paths_and_methods_are_refused(port: int) -> None:
    head = await exchange(port, b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert head.endswith(b"\r\n\r\n")
    assert b"content-length: 6" in head
    missing = await exchange(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404 Not Found")
    assert missing.endswith(b"try /hello or /broken\n")
    post = await exchange(port, b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert post.startswith(b"HTTP/1.1 405 Method Not Allowed")
    assert calls == ["hello"]


async def test_garbage_and_oversized_heads_get_an_error_and_the_server_goes_on(port: int) -> None:
    assert (await exchange(port, b"\x00\x01 nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    huge = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert (await exchange(port, huge)).startswith(b"HTTP/1.1 431 ")
    assert b"hello" in await exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")


async def test_a_failing_route_drops_its_client_only(port: int) -> None:
    assert await exchange(port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    assert b"hello" in await exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")


async def test_silent_clients_are_dropped_after_the_timeout_and_never_block_others(
    monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> None:
    monkeypatch.setattr(health_server, "CLIENT_TIMEOUT", 0.3)
    sockets = bind("127.0.0.1", 0)
    port = int(sockets[0].getsockname()[1])
    await nursery.start(OpsServer({"/hello": hello}).serve, sockets)
    # Every slot taken by a client that never sends a byte: the next one waits its turn.
    silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_CLIENTS)]
    with trio.fail_after(5):
        started = trio.current_time()
        reply = await exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        waited = trio.current_time() - started
    assert b"hello" in reply
    assert waited >= 0.25  # served once the silent ones were dropped
    for stream in silent:
        assert await stream.receive_some(10) == b""  # closed by the server
        await stream.aclose()


def test_a_taken_port_fails_at_bind() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            bind("127.0.0.1", taken.getsockname()[1])
