"""HTTP/2 through ShardedTransport against real servers: hypercorn and tests/support/h2_server.

The failure tests pin what the gem's callbacks see (Ruby class, error_type, message) for each
way an HTTP/2 exchange can break; they were written against the httpcore path and hold for
the transport of our own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import hpack
import httpx
import pytest
import trio
from h2.connection import H2Connection

from patient_sidekiq.http import http2_connection, http2_headers, http2_transport, http_client
from patient_sidekiq.http.http2_headers import CachingDecoder, PlainEncoder, request_headers
from patient_sidekiq.http.http2_transport import H2Transport
from patient_sidekiq.http.http_client import ExecutionResult, execute
from patient_sidekiq.http.http_transport import ShardedTransport
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.wire.failures import RequestError
from patient_sidekiq.wire.request import Request
from patient_sidekiq.wire.response import Response
from tests.support.h2_server import RawH2Server, start_http1_only_tls, start_raw_h2
from tests.support.http import TRANSPORT_TIMEOUTS, Server, TlsCerts, fetch_through
from tests.support.programs import free_port

SETTINGS = HttpSettings(retries=0, request_timeout=10.0, max_response_size=100_000)
BAD_RESPONSE = "Protocol::HTTP1::BadResponse"


@pytest.fixture(params=["http2", "auto"])
async def h2_transport(
    request: pytest.FixtureRequest, tls_certs: TlsCerts
) -> AsyncIterator[ShardedTransport]:
    """The worker's transport over TLS, pinned to HTTP/2 or negotiating it (ALPN)."""
    settings = dataclasses.replace(
        SETTINGS, ca_bundle=str(tls_certs.ca_file), protocol=request.param
    )
    sharded = ShardedTransport(settings)
    yield sharded
    await sharded.aclose()


@pytest.fixture
async def raw_server(nursery: trio.Nursery, tls_certs: TlsCerts) -> RawH2Server:
    return await start_raw_h2(nursery, tls_certs)


async def run(
    transport: ShardedTransport, url: str, *, method: str = "get", timeout: float | None = None
) -> ExecutionResult:
    request = Request.build(method, url, timeout=timeout)
    return await execute(transport, SETTINGS, request, request_id="rid")


async def failure(
    transport: ShardedTransport, url: str, *, timeout: float | None = None
) -> tuple[str, str, str]:
    result = await run(transport, url, timeout=timeout)
    assert isinstance(result, RequestError), result
    return result.class_name, result.error_type, result.message


# --- failures as the gem's callbacks see them ------------------------------------------------


async def test_stream_reset_before_the_response(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    class_name, error_type, message = await failure(h2_transport, raw_server.url("/reset"))
    assert (class_name, error_type) == (BAD_RESPONSE, "unknown")
    assert message.startswith("<StreamReset stream_id:")
    assert "error_code:2" in message


async def test_stream_reset_mid_body(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    class_name, error_type, message = await failure(h2_transport, raw_server.url("/reset-mid-body"))
    assert (class_name, error_type) == (BAD_RESPONSE, "unknown")
    assert message.startswith("<StreamReset stream_id:")
    assert "remote_reset:True" in message


async def test_connection_closed_mid_body(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    found = await failure(h2_transport, raw_server.url("/drop-mid-body"))
    assert found == (BAD_RESPONSE, "unknown", "Server disconnected")


async def test_connection_reset_mid_body(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    found = await failure(h2_transport, raw_server.url("/abort-mid-body"))
    assert found == ("Errno::ECONNRESET", "connection", "Connection reset by peer")


async def test_goaway_with_an_error(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    found = await failure(h2_transport, raw_server.url("/goaway-error"))
    text = "<ConnectionTerminated error_code:2, last_stream_id:1, additional_data:None>"
    assert found == (BAD_RESPONSE, "unknown", text)


async def test_slow_response_times_out(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    found = await failure(h2_transport, raw_server.url("/slow?seconds=5"), timeout=0.5)
    assert found == ("Async::TimeoutError", "timeout", "execution expired")


async def test_slow_body_times_out(tls_server: Server, h2_transport: ShardedTransport) -> None:
    found = await failure(h2_transport, tls_server.url("/slow-body?seconds=5"), timeout=0.5)
    assert found == ("Async::TimeoutError", "timeout", "execution expired")


async def test_size_limit_while_streaming(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    class_name, error_type, _ = await failure(h2_transport, raw_server.url("/big?bytes=300000"))
    assert (class_name, error_type) == ("PatientHttp::ResponseTooLargeError", "response_too_large")
    # the connection is still good for the next request
    assert isinstance(await run(h2_transport, raw_server.url("/echo")), Response)


async def test_connection_refused(h2_transport: ShardedTransport) -> None:
    port = free_port()
    class_name, error_type, message = await failure(h2_transport, f"https://127.0.0.1:{port}/x")
    assert (class_name, error_type) == ("Errno::ECONNREFUSED", "connection")
    assert message == f"Connection refused - connect(2) for 127.0.0.1:{port}"


# --- the transport itself --------------------------------------------------------------------

TIMEOUTS = TRANSPORT_TIMEOUTS
fetch = fetch_through


@pytest.fixture
async def h2(tls_certs: TlsCerts) -> AsyncIterator[H2Transport]:
    """H2Transport alone, pinned to HTTP/2."""
    settings = dataclasses.replace(SETTINGS, ca_bundle=str(tls_certs.ca_file), protocol="http2")
    transport = H2Transport(settings)
    yield transport
    await transport.aclose()


def echo_of(body: bytes) -> dict[str, Any]:
    echo: dict[str, Any] = json.loads(body)
    return echo


async def test_get_and_post_header_blocks(raw_server: RawH2Server, h2: H2Transport) -> None:
    response, body, _ = await fetch(
        h2, raw_server.url("/echo?q=1"), headers=[("X-Trace", " abc "), ("Connection", "close")]
    )
    assert response.status_code == 200
    assert response.extensions["http_version"] == b"HTTP/2"
    assert response.headers["content-type"] == "application/json"
    echo = echo_of(body)
    names = [name for name, _ in echo["headers"]]
    assert names[:4] == [":method", ":authority", ":scheme", ":path"]
    assert echo["headers"][1][1] == f"127.0.0.1:{raw_server.port}"
    assert echo["path"] == "/echo?q=1"
    assert "host" not in names  # it went as :authority
    assert "connection" not in names  # connection-specific: not HTTP/2
    assert ["x-trace", "abc"] in echo["headers"]  # lowercase, trimmed as h2 sent it
    request = [("content-length", "5"), ("x-after", "1")]
    _, body, _ = await fetch(h2, raw_server.url("/echo"), "POST", b"hello", headers=request)
    echo = echo_of(body)
    assert echo["method"] == "POST"
    assert echo["body_length"] == 5
    assert [name for name, _ in echo["headers"]][4:6] == ["content-length", "x-after"]
    assert echo["connection"] == 1  # both on one connection


async def test_a_te_header_h2_refused_is_a_local_protocol_error(
    raw_server: RawH2Server, h2: H2Transport
) -> None:
    with pytest.raises(httpx.LocalProtocolError, match="Invalid value for TE header"):
        await fetch(h2, raw_server.url("/echo"), headers=[("TE", "gzip")])
    _, body, _ = await fetch(h2, raw_server.url("/echo"), headers=[("TE", "trailers")])
    assert ["te", "trailers"] in echo_of(body)["headers"]


async def test_big_bodies_both_ways(
    nursery: trio.Nursery, tls_certs: TlsCerts, h2: H2Transport
) -> None:
    # the server's 64 KiB stream window makes the upload wait for WINDOW_UPDATEs; the 5 MB
    # download passes our 2 MiB stream window several times over
    server = await start_raw_h2(nursery, tls_certs, initial_window=65535)
    upload = bytes(range(256)) * (3 * 4096)
    for _ in range(2):  # the second on a connection with nothing else to read
        _, body, _ = await fetch(h2, server.url("/echo"), "POST", upload)
        echo = echo_of(body)
        assert echo["body_length"] == len(upload)
        assert echo["body_sha256"] == hashlib.sha256(upload).hexdigest()
    response, body, _ = await fetch(h2, server.url("/big?bytes=5000000"))
    assert response.status_code == 200
    assert body == b"x" * 5_000_000


async def test_streams_share_connections_up_to_the_server_limit(
    nursery: trio.Nursery, tls_certs: TlsCerts, h2: H2Transport
) -> None:
    # every response waits until all 50 streams are open at once: 5 connections of 10
    server = await start_raw_h2(nursery, tls_certs, max_concurrent_streams=10, hold=50)
    bodies: list[bytes] = []

    async def one() -> None:
        bodies.append((await fetch(h2, server.url("/hold")))[1])

    with trio.fail_after(20):
        async with trio.open_nursery() as requests:
            for _ in range(50):
                requests.start_soon(one)
    assert server.state.connections == 5
    assert server.state.peak_streams == 50
    assert h2.connections() == 5
    per_connection = sorted(bodies.count(f"held {n}".encode()) for n in range(1, 6))
    assert per_connection == [10] * 5


async def test_a_second_connection_when_the_first_is_full(
    nursery: trio.Nursery, tls_certs: TlsCerts, h2: H2Transport
) -> None:
    server = await start_raw_h2(nursery, tls_certs, max_concurrent_streams=2, hold=3)
    with trio.fail_after(20):
        async with trio.open_nursery() as requests:
            for _ in range(3):
                requests.start_soon(fetch, h2, server.url("/hold"))
    assert server.state.connections == 2
    # both stay for reuse; the next request takes the first with room
    _, body, _ = await fetch(h2, server.url("/echo"))
    assert echo_of(body)["connection"] == 1
    assert server.state.connections == 2


async def test_idle_connection_reused_then_expired(
    raw_server: RawH2Server, h2: H2Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        _, body, _ = await fetch(h2, raw_server.url("/echo"))
        assert echo_of(body)["connection"] == 1
    assert h2.connections() == 1
    monkeypatch.setattr(http2_transport, "KEEPALIVE_EXPIRY", -1.0)  # any idle one expired
    _, body, _ = await fetch(h2, raw_server.url("/echo"))
    assert echo_of(body)["connection"] == 2
    assert raw_server.state.connections == 2
    assert h2.connections() == 1  # the expired one closed


async def test_graceful_goaway_finishes_the_stream_it_names(
    raw_server: RawH2Server, h2: H2Transport
) -> None:
    response, body, _ = await fetch(h2, raw_server.url("/goaway-graceful"))
    assert (response.status_code, body) == (200, b"finished")
    _, body, _ = await fetch(h2, raw_server.url("/echo"))  # never on the closing connection
    assert echo_of(body)["connection"] == 2


async def test_refused_stream_is_sent_once_more(
    nursery: trio.Nursery, tls_certs: TlsCerts, h2: H2Transport
) -> None:
    server = await start_raw_h2(nursery, tls_certs, refuse_connections=1)
    _, body, _ = await fetch(h2, server.url("/echo"), "POST", b"again")
    echo = echo_of(body)
    assert (echo["connection"], echo["body_length"]) == (2, 5)
    twice = await start_raw_h2(nursery, tls_certs, refuse_connections=2)
    with pytest.raises(httpx.RemoteProtocolError, match="last_stream_id:0"):
        await fetch(h2, twice.url("/echo"))
    assert twice.state.connections == 2


async def test_a_cap_on_requests_per_connection_is_learnt(
    nursery: trio.Nursery, tls_certs: TlsCerts, h2: H2Transport
) -> None:
    # as nginx's keepalive_requests 3: 10 streams at once on the first connection, 7 refused
    # and sent again; later connections stop at the third stream instead of being refused
    server = await start_raw_h2(nursery, tls_certs, max_requests=3)
    bodies: list[bytes] = []

    async def one() -> None:
        bodies.append((await fetch(h2, server.url("/echo")))[1])

    with trio.fail_after(10):
        async with trio.open_nursery() as requests:
            for _ in range(10):
                requests.start_soon(one)
    per_connection = sorted(echo_of(body)["connection"] for body in bodies)
    assert per_connection == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert server.state.answered == 10  # each request answered once: nothing refused twice


async def test_read_timeout(raw_server: RawH2Server, h2: H2Transport) -> None:
    timeouts = {**TIMEOUTS, "read": 0.2}
    with pytest.raises(httpx.ReadTimeout):
        await fetch(h2, raw_server.url("/slow?seconds=5"), timeouts=timeouts)
    _, body, _ = await fetch(h2, raw_server.url("/echo"))  # the connection is still fine
    assert echo_of(body)["connection"] == 1


async def test_a_server_that_never_sends_its_settings(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):
            pass

    listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    h2c = H2Transport(dataclasses.replace(SETTINGS, protocol="http2"))
    try:
        with pytest.raises(httpx.ConnectTimeout):
            await fetch(h2c, f"http://127.0.0.1:{port}/", timeouts={**TIMEOUTS, "connect": 0.2})
        assert h2c.connections() == 0
    finally:
        await h2c.aclose()


async def test_connection_drop_fails_every_stream_on_it(
    raw_server: RawH2Server, h2: H2Transport
) -> None:
    errors: list[BaseException] = []

    async def slow() -> None:
        try:
            await fetch(h2, raw_server.url("/slow?seconds=5"))
        except httpx.RemoteProtocolError as exc:
            errors.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as requests:
            requests.start_soon(slow)
            requests.start_soon(slow)
            await raw_server.state.wait_open_streams(2)
            with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected"):
                await fetch(h2, raw_server.url("/drop-mid-body"))
    assert [str(exc) for exc in errors] == ["Server disconnected"] * 2
    assert h2.connections() == 0


async def test_h2c_prior_knowledge(nursery: trio.Nursery, http_server: Server) -> None:
    raw = await start_raw_h2(nursery)
    settings = dataclasses.replace(SETTINGS, protocol="http2")
    sharded = ShardedTransport(settings)
    try:
        response = await run(sharded, http_server.url("/echo"))  # hypercorn, plain port
        assert isinstance(response, Response)
        assert response.json()["http_version"] == "2"
        response = await run(sharded, raw.url("/echo"))
        assert isinstance(response, Response)
        assert response.json()["path"] == "/echo"
    finally:
        await sharded.aclose()


async def test_auto_falls_back_to_http1_when_alpn_picks_it(
    nursery: trio.Nursery, tls_certs: TlsCerts
) -> None:
    server = await start_http1_only_tls(nursery, tls_certs)
    settings = dataclasses.replace(SETTINGS, ca_bundle=str(tls_certs.ca_file))
    sharded = ShardedTransport(settings)
    try:
        for _ in range(2):
            request = Request.build("post", server.url("/echo"), body="over h1")
            response = await execute(sharded, settings, request, request_id="rid")
            assert isinstance(response, Response), response
            echo = response.json()
            assert (echo["http_version"], echo["body"]) == ("1.1", "over h1")
        assert sharded._h2 is not None
        assert sharded._h2.connections() == 0
        assert sharded._h11 is not None
        assert sharded._h11.idle_connections() == 1  # the second request reused it
    finally:
        await sharded.aclose()


async def test_connection_tasks_run_in_the_nursery_given(
    raw_server: RawH2Server, tls_certs: TlsCerts
) -> None:
    settings = dataclasses.replace(SETTINGS, ca_bundle=str(tls_certs.ca_file), protocol="http2")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            sharded = ShardedTransport(settings, nursery=nursery)
            assert isinstance(await run(sharded, raw_server.url("/echo")), Response)
            assert len(nursery.child_tasks) == 2  # the connection's reader and writer
            await sharded.aclose()
        # the nursery closed: aclose ended both tasks


# --- HPACK ------------------------------------------------------------------------------------


def test_plain_encoder_blocks_decode_as_sent() -> None:
    encoder = PlainEncoder()
    decoder = hpack.Decoder()
    long_value = b"v" * 300  # lengths past a 7-bit prefix
    fields = [
        (b":method", b"GET"),  # exactly in the static table
        (b":authority", b"example.com:8443"),  # name in the static table
        (b":scheme", b"https"),
        (b":path", b"/a?b=c"),
        (b"x-request-id", b"11111111-2222-4333-8444-555555555555"),  # a new name
        (b"user-agent", long_value),
    ]
    first = encoder.encode(fields)
    assert first[:1] == b"\x20"  # dynamic table size 0, once
    assert decoder.decode(first, raw=True) == fields
    second = encoder.encode(fields)  # from the cache this time
    assert second == first[1:]
    assert decoder.decode(second, raw=True) == fields
    assert decoder.header_table_size == 0  # nothing was ever indexed


async def test_sensitive_fields_go_out_never_indexed(
    raw_server: RawH2Server, h2: H2Transport
) -> None:
    request = httpx.Request(
        "GET", raw_server.url("/echo"), headers={"Authorization": "Bearer x", "Cookie": "a=1"}
    )
    headers, end_stream = request_headers(request)
    assert end_stream
    decoded = hpack.Decoder().decode(PlainEncoder().encode(headers), raw=True)
    flags = {bytes(field[0]): not getattr(field, "indexable", True) for field in decoded}
    assert flags[b"authorization"]
    assert flags[b"cookie"]
    assert not flags[b":path"]
    _, body, _ = await fetch(h2, raw_server.url("/echo"), headers=[("Authorization", "Bearer x")])
    assert ["authorization", "Bearer x"] in echo_of(body)["headers"]
    # and so through h2, which rebuilds every field before the encoder sees it
    conn = H2Connection(config=http2_connection._CONFIG)
    conn.encoder = PlainEncoder()  # type: ignore[assignment]
    conn.initiate_connection()
    conn.data_to_send()
    conn.send_headers(1, headers, end_stream=True)
    frame = conn.data_to_send()
    decoded = hpack.Decoder().decode(frame[9:], raw=True)  # one HEADERS frame: its block
    never = {bytes(field[0]) for field in decoded if not getattr(field, "indexable", True)}
    assert never == {b"authorization", b"cookie"}


def test_caching_decoder_remembers_blocks_that_need_no_table() -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = 0
    fields = [(b":status", b"200"), (b"server", b"nginx"), (b"content-type", b"text/plain")]
    opening = encoder.encode(fields)  # starts with the size update: never remembered
    block = encoder.encode(fields)
    http2_headers._DECODED.clear()
    decoder = CachingDecoder()
    assert decoder.decode(opening, raw=True) == fields
    assert decoder.decode(block, raw=True) == fields
    assert decoder.decode(block, raw=True) == fields  # now from memory
    assert list(http2_headers._DECODED) == [block]
    table_user = hpack.Encoder().encode(fields)  # a table in use: nothing is remembered
    caching = CachingDecoder()
    assert caching.decode(table_user, raw=True) == fields
    assert caching.decode(hpack.Encoder().encode(fields), raw=True) == fields
    assert list(http2_headers._DECODED) == [block]


# --- the direct path (no httpx.Request) --------------------------------------------------------


class _ThroughHttpx(httpx.AsyncBaseTransport):
    """The same transport, hidden from http_client's direct path: every request is an
    ``httpx.Request`` again, as before the path existed."""

    def __init__(self, inner: ShardedTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)


DIRECT_CASES: list[tuple[str, str, dict[str, str], str | None]] = [
    ("get", "/echo", {}, None),
    ("get", "/echo?q=1&r={a}", {"X-Trace": " abc ", "Accept": "*/*"}, None),
    ("post", "/echo", {"content-type": "text/plain"}, "hello"),
    ("put", "/echo", {"content-length": "5", "x-after": "1"}, "hello"),
    ("get", "/echo", {"host": "example.test", "cookie": "a=1", "authorization": "t"}, None),
    ("get", "/echo", {"x-name": "Zoë", "te": "trailers", "connection": "close"}, None),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), DIRECT_CASES)
async def test_the_direct_path_sends_what_httpx_sent(
    raw_server: RawH2Server,
    h2_transport: ShardedTransport,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    headers: dict[str, str],
    body: str | None,
) -> None:
    request = Request.build(method, raw_server.url(path), headers=headers, body=body)
    before = await execute(_ThroughHttpx(h2_transport), SETTINGS, request, request_id="rid")
    # no httpx.Request on the direct path (the origin speaks HTTP/2: none is needed)
    monkeypatch.setattr(http_client, "_httpx_request", None)
    direct = await execute(h2_transport, SETTINGS, request, request_id="rid")
    assert isinstance(before, Response), before
    assert isinstance(direct, Response), direct
    assert {**direct.json(), "connection": 0} == {**before.json(), "connection": 0}
    assert (direct.status, direct.headers) == (before.status, before.headers)
