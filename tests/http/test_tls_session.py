"""TlsSession: HTTP/1.1's TLS on the descriptor, against raw TLS servers that misbehave.

Each failure is also met through trio's SSLStream (``open_stream``, what HTTP/1.1 used
before and HTTP/2 still uses): both must read as the same Ruby error.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import httpx
import pytest
import trio

from patient_sidekiq.http.connect import open_socket, open_stream
from patient_sidekiq.http.http1_codec import ResponseParser
from patient_sidekiq.http.http1_transport import H11Transport
from patient_sidekiq.http.ruby_errors import ruby_error
from patient_sidekiq.http.settings import HttpSettings, ssl_context_for
from tests.support.http import Server, TlsCerts, fetch_through

SETTINGS = HttpSettings(retries=0, request_timeout=10.0)

TlsHandler = Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]]
TcpHandler = Callable[[trio.SocketStream], Awaitable[None]]


def server_context(certs: TlsCerts) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert_file, certs.key_file)
    return context


async def tcp_server(nursery: trio.Nursery, handler: TcpHandler, host: str = "127.0.0.1") -> int:
    async def guarded(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, guarded, 0, host=host))
    return int(listeners[0].socket.getsockname()[1])


async def raw_tls_server(
    nursery: trio.Nursery, certs: TlsCerts, handler: TlsHandler, host: str = "127.0.0.1"
) -> int:
    context = server_context(certs)

    async def wrapped(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, context, server_side=True)
        await stream.do_handshake()
        await handler(stream)

    return await tcp_server(nursery, wrapped, host)


async def read_request(stream: trio.abc.ReceiveStream) -> None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return
        buffer += data


def trusting(certs: TlsCerts) -> H11Transport:
    return H11Transport(dataclasses.replace(SETTINGS, ca_bundle=str(certs.ca_file)))


async def both_errors(url: str, certs: TlsCerts) -> tuple[tuple[str, str], tuple[str, str]]:
    """The Ruby error of a GET of ``url`` through H11Transport, and through an SSLStream
    opened by ``open_stream`` (request written, response read to EOF and parsed alike)."""
    transport = trusting(certs)
    try:
        with pytest.raises(httpx.TransportError) as ours:
            await fetch_through(transport, url)
    finally:
        await transport.aclose()
    url_parts = httpx.URL(url)
    origin = ("https", url_parts.host, url_parts.port or 443)
    context = ssl_context_for(dataclasses.replace(SETTINGS, ca_bundle=str(certs.ca_file)))
    with pytest.raises(httpx.TransportError) as theirs:
        await _fetch_through_ssl_stream(origin, context)
    return ruby_error(ours.value, url), ruby_error(theirs.value, url)


async def _fetch_through_ssl_stream(origin: tuple[str, str, int], context: ssl.SSLContext) -> None:
    stream, tcp = await open_stream(origin, context)
    try:
        try:
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        except (trio.BrokenResourceError, OSError) as exc:
            raise httpx.WriteError(str(exc.__cause__ or exc)) from exc
        parser = ResponseParser(head_only=False)
        while not parser.complete:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, OSError) as exc:
                raise httpx.ReadError(str(exc.__cause__ or exc)) from exc
            if data:
                parser.feed(bytes(data))
            else:
                parser.feed_eof()
    finally:
        tcp.socket.close()


async def test_bodies_larger_than_a_record_both_ways(
    tls_server: Server, tls_certs: TlsCerts
) -> None:
    transport = trusting(tls_certs)
    try:
        payload = bytes(range(256)) * 4096  # 1 MiB: many records, writes that block
        _, body, _ = await fetch_through(
            transport, tls_server.url("/echo"), method="POST", content=payload
        )
        assert json.loads(body)["body"].encode("latin-1") == payload
        _, big, _ = await fetch_through(transport, tls_server.url("/big?bytes=3000000"))
        assert len(big) == 3_000_000
        assert transport.idle_connections() == 1  # the same connection, reused
    finally:
        await transport.aclose()


@pytest.mark.parametrize("close_notify", [True, False])
async def test_eof_mid_body_reads_as_the_gems_eof(
    nursery: trio.Nursery, tls_certs: TlsCerts, close_notify: bool
) -> None:
    async def partial_body(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await read_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        if close_notify:
            await stream.aclose()  # close_notify, then FIN
        else:
            await stream.transport_stream.aclose()  # FIN only: a ragged EOF

    port = await raw_tls_server(nursery, tls_certs, partial_body)
    ours, theirs = await both_errors(f"https://127.0.0.1:{port}/", tls_certs)
    assert ours == theirs
    assert ours[0] == "EOFError"


async def test_reset_mid_body_reads_as_econnreset(
    nursery: trio.Nursery, tls_certs: TlsCerts
) -> None:
    async def reset(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await read_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await trio.sleep(0.05)  # let the client take the head before the reset
        tcp = stream.transport_stream
        tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tcp.socket.close()

    port = await raw_tls_server(nursery, tls_certs, reset)
    ours, theirs = await both_errors(f"https://127.0.0.1:{port}/", tls_certs)
    assert ours == theirs
    assert ours[0] == "Errno::ECONNRESET"


async def test_garbage_after_the_handshake_is_an_ssl_error(
    nursery: trio.Nursery, tls_certs: TlsCerts
) -> None:
    async def garbage(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await read_request(stream)
        await stream.transport_stream.send_all(b"\x17\x03\x03\x00\x05hello")  # a bad record
        await read_request(stream.transport_stream)  # until the client hangs up

    port = await raw_tls_server(nursery, tls_certs, garbage)
    ours, theirs = await both_errors(f"https://127.0.0.1:{port}/", tls_certs)
    assert ours == theirs
    assert ours[0] == "OpenSSL::SSL::SSLError"


@pytest.mark.parametrize("reply", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"])
async def test_handshake_failures_read_as_before(
    nursery: trio.Nursery, tls_certs: TlsCerts, reply: bytes
) -> None:
    async def not_tls(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        if reply:
            await stream.send_all(reply)

    port = await tcp_server(nursery, not_tls)
    ours, theirs = await both_errors(f"https://127.0.0.1:{port}/", tls_certs)
    assert ours == theirs
    assert ours[0] == "OpenSSL::SSL::SSLError"


async def test_a_name_the_certificate_does_not_cover_fails_verification(
    nursery: trio.Nursery, tls_certs: TlsCerts
) -> None:
    port = await raw_tls_server(nursery, tls_certs, read_request, host="127.0.0.2")
    context = ssl_context_for(dataclasses.replace(SETTINGS, ca_bundle=str(tls_certs.ca_file)))
    with pytest.raises(httpx.ConnectError) as caught:
        # the certificate names 127.0.0.1 and localhost, not this other loopback address
        await open_socket(("https", "127.0.0.2", port), context)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


async def test_a_handshake_the_server_never_answers_can_be_cancelled(
    nursery: trio.Nursery, tls_certs: TlsCerts
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await tcp_server(nursery, silent)
    context = ssl_context_for(dataclasses.replace(SETTINGS, ca_bundle=str(tls_certs.ca_file)))
    with trio.move_on_after(0.2) as scope:
        await open_socket(("https", "127.0.0.1", port), context)
    assert scope.cancelled_caught


@pytest.mark.parametrize(
    ("close_notify", "expected"),
    [
        (True, ("EOFError", "Could not read line!")),
        # Ruby's OpenSSL refuses a ragged EOF where the status line should be (the
        # differential group tls_http1 showed the gem's OpenSSL::SSL::SSLError)
        (False, ("OpenSSL::SSL::SSLError", "SSL_read: unexpected eof while reading")),
    ],
)
async def test_a_close_before_any_answer_reads_as_the_gem_reads_it(
    nursery: trio.Nursery, tls_certs: TlsCerts, close_notify: bool, expected: tuple[str, str]
) -> None:
    async def hang_up(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await read_request(stream)
        if close_notify:
            await stream.aclose()
        else:
            await stream.transport_stream.aclose()

    port = await raw_tls_server(nursery, tls_certs, hang_up)
    url = f"https://127.0.0.1:{port}/"
    transport = trusting(tls_certs)
    try:
        with pytest.raises(httpx.TransportError) as raised:
            await fetch_through(transport, url)
    finally:
        await transport.aclose()
    assert ruby_error(raised.value, url) == expected


async def test_a_reused_connection_closed_without_close_notify_is_retried(
    nursery: trio.Nursery, tls_certs: TlsCerts
) -> None:
    async def one_answer_then_ragged_close(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await read_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await read_request(stream)  # the reuse: hang up on it, FIN only
        await stream.transport_stream.aclose()

    port = await raw_tls_server(nursery, tls_certs, one_answer_then_ragged_close)
    transport = trusting(tls_certs)
    try:
        for _ in range(2):
            response, body, _ = await fetch_through(transport, f"https://127.0.0.1:{port}/")
            assert (response.status_code, body) == (200, b"ok")
    finally:
        await transport.aclose()
