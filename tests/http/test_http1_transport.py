"""Behaviour of H11Transport (and its routing in ShardedTransport) against real local servers."""

from __future__ import annotations

import dataclasses
import errno
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from patient_sidekiq.http import http1_connection
from patient_sidekiq.http.http1_transport import H11Transport
from patient_sidekiq.http.http_client import classify_error, execute
from patient_sidekiq.http.http_transport import ShardedTransport
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.wire.request import Request
from patient_sidekiq.wire.response import Response
from tests.support.http import TRANSPORT_TIMEOUTS, Server, TlsCerts, fetch_through
from tests.support.programs import free_port

SETTINGS = HttpSettings(retries=0, request_timeout=10.0)
TIMEOUTS = TRANSPORT_TIMEOUTS
fetch = fetch_through


@pytest.fixture
async def transport() -> AsyncIterator[H11Transport]:
    h11t = H11Transport(SETTINGS)
    yield h11t
    await h11t.aclose()


def errnos(exc: BaseException) -> set[int]:
    found: set[int] = set()
    current: BaseException | None = exc
    while current is not None:
        leaves = current.exceptions if isinstance(current, BaseExceptionGroup) else (current,)
        found |= {leaf.errno for leaf in leaves if isinstance(leaf, OSError) and leaf.errno}
        current = current.__cause__ or current.__context__
    return found


# --- a raw HTTP/1.1 server that counts connections -------------------------------------------


async def read_head(stream: trio.SocketStream, buffer: bytearray) -> bool:
    """Read one request head (our requests here have no body); False at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buffer += data
    del buffer[: buffer.index(b"\r\n\r\n") + 4]
    return True


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def raw_server(nursery: trio.Nursery, handler: Handler) -> tuple[str, list[int]]:
    """Serve ``handler``; return the base URL and a list that grows by one per connection."""
    connections: list[int] = []

    async def counting(stream: trio.SocketStream) -> None:
        connections.append(1)
        try:
            await handler(stream)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, counting, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}", connections


async def keep_alive(stream: trio.SocketStream) -> None:
    buffer = bytearray()
    while await read_head(stream, buffer):
        await stream.send_all(OK)


async def close_after_one(stream: trio.SocketStream) -> None:
    """Answer one request (without ``connection: close``), then close."""
    if await read_head(stream, bytearray()):
        await stream.send_all(OK)


async def drop_second(stream: trio.SocketStream) -> None:
    """Answer the first request; close on reading the second (an idle-close race)."""
    buffer = bytearray()
    if await read_head(stream, buffer):
        await stream.send_all(OK)
    await read_head(stream, buffer)


async def test_keep_alive_reuses_one_connection(
    nursery: trio.Nursery, transport: H11Transport
) -> None:
    base, connections = await raw_server(nursery, keep_alive)
    for _ in range(5):
        response, body, _ = await fetch(transport, f"{base}/x")
        assert (response.status_code, body) == (200, b"ok")
        assert response.extensions["http_version"] == b"HTTP/1.1"
    assert len(connections) == 1
    assert transport.idle_connections() == 1


async def test_server_closing_idle_connection_is_not_an_error(
    nursery: trio.Nursery, transport: H11Transport
) -> None:
    base, connections = await raw_server(nursery, close_after_one)
    for _ in range(3):
        await trio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        response, body, _ = await fetch(transport, f"{base}/x")
        assert (response.status_code, body) == (200, b"ok")
    assert len(connections) == 3


async def test_reused_connection_dropped_on_send_is_retried_once_when_idempotent(
    nursery: trio.Nursery, transport: H11Transport
) -> None:
    base, connections = await raw_server(nursery, drop_second)
    for _ in range(3):
        response, body, _ = await fetch(transport, f"{base}/x", method="PUT", content=b"b")
        assert (response.status_code, body) == (200, b"ok")
    assert len(connections) == 3


async def test_reused_connection_dropped_on_a_post_is_an_error_not_a_resend(
    nursery: trio.Nursery, transport: H11Transport
) -> None:
    base, connections = await raw_server(nursery, drop_second)
    response, body, _ = await fetch(transport, f"{base}/x", method="POST", content=b"b")
    assert (response.status_code, body) == (200, b"ok")
    with pytest.raises(httpx.TransportError):
        await fetch(transport, f"{base}/x", method="POST", content=b"b")
    assert len(connections) == 1  # the server may have acted on it: not sent again


async def test_idle_connections_expire(
    nursery: trio.Nursery, transport: H11Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, connections = await raw_server(nursery, keep_alive)
    monkeypatch.setattr(http1_connection, "KEEPALIVE_EXPIRY", 0.05)
    await fetch(transport, f"{base}/x")
    await trio.sleep(0.1)
    await fetch(transport, f"{base}/x")
    assert len(connections) == 2


# --- against hypercorn -----------------------------------------------------------------------


@pytest.mark.parametrize("length", ["1", "0"])
async def test_content_length_and_chunked_bodies(
    http_server: Server, transport: H11Transport, length: str
) -> None:
    url = http_server.url(f"/big?bytes=3000000&length={length}")
    response, body, chunks = await fetch(transport, url)
    assert response.status_code == 200
    assert len(body) == 3_000_000
    assert chunks > 1  # streamed, not read in one piece
    assert ("content-length" in response.headers) == (length == "1")
    assert ("transfer-encoding" in response.headers) == (length == "0")
    assert transport.idle_connections() == 1


async def test_post_body_headers_and_204(http_server: Server, transport: H11Transport) -> None:
    request = httpx.Request(
        "POST",
        http_server.url("/echo?q=1"),
        headers={"X-Custom": "v"},
        content=b"hello",
        extensions={"timeout": TIMEOUTS},
    )
    response = await transport.handle_async_request(request)
    body = await response.aread()
    await response.aclose()
    echo = json.loads(body)
    assert (echo["method"], echo["body"], echo["query"]) == ("POST", "hello", "q=1")
    assert echo["http_version"] == "1.1"
    headers = dict(echo["headers"])
    assert headers["x-custom"] == "v"
    assert headers["content-length"] == "5"
    response, body, _ = await fetch(transport, http_server.url("/status/204"))
    assert (response.status_code, body) == (204, b"")
    assert transport.idle_connections() == 1


async def test_reset_mid_body_is_a_read_error(http_server: Server, transport: H11Transport) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as caught:
        await fetch(transport, http_server.url("/reset"))
    assert classify_error(caught.value) == "connection"
    assert transport.idle_connections() == 0


async def test_reset_before_response(reset_server: Server, transport: H11Transport) -> None:
    with pytest.raises(httpx.TransportError) as caught:
        await fetch(transport, reset_server.url("/x"))
    assert classify_error(caught.value) == "connection"


async def test_unread_body_closes_the_connection(
    http_server: Server, transport: H11Transport
) -> None:
    request = httpx.Request(
        "GET", http_server.url("/big?bytes=3000000"), extensions={"timeout": TIMEOUTS}
    )
    response = await transport.handle_async_request(request)
    await response.aclose()
    assert transport.idle_connections() == 0
    response, body, _ = await fetch(transport, http_server.url("/status/200"))
    assert (response.status_code, body) == (200, b"status 200")


async def test_connection_refused(transport: H11Transport) -> None:
    with pytest.raises(httpx.ConnectError) as caught:
        await fetch(transport, f"http://127.0.0.1:{free_port()}/")
    assert errno.ECONNREFUSED in errnos(caught.value)
    assert classify_error(caught.value) == "connection"


async def test_connect_retries(nursery: trio.Nursery) -> None:
    retrying = H11Transport(dataclasses.replace(SETTINGS, retries=2))
    started = trio.current_time()
    with pytest.raises(httpx.ConnectError):
        await fetch(retrying, f"http://127.0.0.1:{free_port()}/")
    assert trio.current_time() - started >= 0.5  # retried after 0 s, then 0.5 s
    await retrying.aclose()


async def test_tls_with_and_without_the_ca(tls_server: Server, tls_certs: TlsCerts) -> None:
    trusting = H11Transport(dataclasses.replace(SETTINGS, ca_bundle=str(tls_certs.ca_file)))
    try:
        for host in ("127.0.0.1", "localhost"):
            _, body, _ = await fetch(trusting, tls_server.url("/echo", host=host))
            assert json.loads(body)["http_version"] == "1.1"  # ALPN http/1.1 only
        assert trusting.idle_connections() == 2
    finally:
        await trusting.aclose()
    untrusting = H11Transport(SETTINGS)
    try:
        with pytest.raises(httpx.ConnectError) as caught:
            await fetch(untrusting, tls_server.url("/echo"))
    finally:
        await untrusting.aclose()
    assert classify_error(caught.value) == "ssl"
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


async def test_read_and_connect_timeouts(http_server: Server, transport: H11Transport) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await fetch(transport, http_server.url("/slow?seconds=5"), timeouts={"read": 0.2})
    with pytest.raises(httpx.ReadTimeout):
        await fetch(transport, http_server.url("/slow-body?seconds=5"), timeouts={"read": 0.2})
    with pytest.raises(httpx.ConnectTimeout):
        await fetch(transport, http_server.url("/echo"), timeouts={"connect": 0})
    assert transport.idle_connections() == 0


async def test_write_timeout(nursery: trio.Nursery, transport: H11Transport) -> None:
    async def never_reads(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    base, _ = await raw_server(nursery, never_reads)
    with pytest.raises(httpx.WriteTimeout):
        await fetch(transport, base, "POST", b"x" * 50_000_000, timeouts={"write": 0.3})


async def test_cancelled_request_does_not_pool_the_connection(
    http_server: Server, transport: H11Transport
) -> None:
    with trio.move_on_after(0.2):
        await fetch(transport, http_server.url("/slow?seconds=5"))
    assert transport.idle_connections() == 0


async def test_thousand_concurrent_requests(http_server: Server, transport: H11Transport) -> None:
    results: list[Any] = []

    async def one(n: int) -> None:
        request = Request.build("get", http_server.url(f"/status/200?n={n}"))
        results.append(await execute(transport, SETTINGS, request, request_id=f"r{n}"))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in range(1000):
                nursery.start_soon(one, n)
    assert [r for r in results if not isinstance(r, Response)] == []
    assert len(results) == 1000
    assert all(r.status == 200 for r in results)
    assert 0 < transport.idle_connections() <= 1000


# --- routing in ShardedTransport -------------------------------------------------------------


async def test_sharded_transport_routes_http1_to_h11(
    http_server: Server, tls_server: Server, tls_certs: TlsCerts
) -> None:
    cases = [
        ("auto", http_server.url("/echo"), True, "1.1"),
        ("http1", http_server.url("/echo"), True, "1.1"),
        ("http1", tls_server.url("/echo"), True, "1.1"),
        ("auto", tls_server.url("/echo"), False, "2"),
        ("http2", tls_server.url("/echo"), False, "2"),
    ]
    for protocol, url, via_h11, version in cases:
        settings = dataclasses.replace(
            SETTINGS, protocol=protocol, ca_bundle=str(tls_certs.ca_file)
        )
        sharded = ShardedTransport(settings)
        try:
            _, body, _ = await fetch(sharded, url)
            assert json.loads(body)["http_version"] == version
            h11t = sharded._h11
            assert (h11t is not None and h11t.idle_connections() == 1) == via_h11
        finally:
            await sharded.aclose()
        assert h11t is None or h11t.idle_connections() == 0
    proxied = ShardedTransport(dataclasses.replace(SETTINGS, proxy_url="http://127.0.0.1:1"))
    assert proxied._h11 is None
    await proxied.aclose()


def test_ssl_errors_are_in_the_chain() -> None:
    error = httpx.ConnectError("x")
    error.__cause__ = trio.BrokenResourceError()
    error.__cause__.__cause__ = ssl.SSLError("bad")
    assert classify_error(error) == "ssl"


async def test_invalid_request_header_is_a_local_protocol_error(transport: H11Transport) -> None:
    request = httpx.Request("GET", "http://127.0.0.1:1/", headers={"x-bad": "a\nb"})
    with pytest.raises(httpx.LocalProtocolError):
        await transport.handle_async_request(request)


# --- the direct path (no httpx.Request) ------------------------------------------------------


async def test_direct_path_writes_host_and_content_length_like_httpx(
    http_server: Server,
) -> None:
    sharded = ShardedTransport(HttpSettings(max_connections=4))
    try:
        for method, body, length in (
            ("post", "b" * 5, "5"),
            ("put", None, "0"),
            ("get", None, "0"),  # the gem's HTTP/1 client states an empty body too
        ):
            request = Request.build(method, http_server.url("/echo"), body=body)
            response = await execute(sharded, HttpSettings(), request, request_id="r")
            assert isinstance(response, Response)
            echo = json.loads(response.text or "")
            headers = dict(echo["headers"])
            assert headers["host"] == f"127.0.0.1:{http_server.port}"
            assert headers.get("content-length") == length
            assert echo["body"] == (body or "")
        assert sharded.direct(http_server.url("/echo")) is not None
    finally:
        await sharded.aclose()
