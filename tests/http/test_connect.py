"""connect: new TCP/TLS streams for both transports, and how their failures read."""

from __future__ import annotations

import ssl

import httpx
import pytest
import trio

from patient_sidekiq.http.connect import open_plain, open_socket, open_stream, with_retries
from patient_sidekiq.http.ruby_errors import ruby_error
from tests.support.http import Server, TlsCerts
from tests.support.programs import free_port


async def test_a_refused_ip_connect_reads_as_the_gems_errno_error() -> None:
    port = free_port()
    with pytest.raises(httpx.ConnectError) as caught:
        await open_stream(("http", "127.0.0.1", port), ssl.create_default_context())
    assert ruby_error(caught.value, f"http://127.0.0.1:{port}/") == (
        "Errno::ECONNREFUSED",
        f"Connection refused - connect(2) for 127.0.0.1:{port}",
    )


async def test_a_refused_connect_reads_the_same_when_it_carries_the_request() -> None:
    # The write made as the connect starts reports the refusal in place of SO_ERROR.
    port = free_port()
    with pytest.raises(httpx.ConnectError) as caught:
        await open_plain("127.0.0.1", port, b"GET / HTTP/1.1\r\n\r\n")
    assert ruby_error(caught.value, f"http://127.0.0.1:{port}/") == (
        "Errno::ECONNREFUSED",
        f"Connection refused - connect(2) for 127.0.0.1:{port}",
    )


async def test_open_plain_writes_the_request_as_it_connects() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        sock, sent = await open_plain("127.0.0.1", port, b"ping")
        assert sent == 4  # a local connect is up before the write: no wait for it
        accepted = await listener.accept()
        assert await accepted.receive_some(4) == b"ping"
        sock.close()
        await accepted.aclose()
        # a name goes through trio's resolver first: nothing written yet
        sock, sent = await open_plain("localhost", port, b"ping")
        assert sent == 0
        sock.close()
        await (await listener.accept()).aclose()


async def test_open_plain_past_its_deadline_sends_nothing() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        with trio.CancelScope(deadline=trio.current_time()) as scope:
            await open_plain("127.0.0.1", port, b"ping")
        assert scope.cancelled_caught
        accepted = await listener.accept()
        assert await accepted.receive_some(4) == b""  # closed without a byte
        await accepted.aclose()


async def test_ip_literals_and_names_both_connect() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    context = ssl.create_default_context()
    async with listener:
        for host in ("127.0.0.1", "localhost"):
            stream, tcp = await open_stream(("http", host, port), context)
            assert stream is tcp
            accepted = await listener.accept()
            await stream.send_all(b"ping")
            assert await accepted.receive_some(4) == b"ping"
            await stream.aclose()
            await accepted.aclose()


async def test_open_socket_gives_http1_its_socket_and_a_finished_handshake(
    tls_server: Server, tls_certs: TlsCerts
) -> None:
    context = ssl.create_default_context(cafile=str(tls_certs.ca_file))
    context.set_alpn_protocols(["http/1.1"])
    tcp, tls = await open_socket(("https", "localhost", tls_server.port), context)
    try:
        assert tls is not None
        assert tls.tls.version() is not None  # handshake done: a request may go at once
        assert tls.tls.selected_alpn_protocol() == "http/1.1"
        assert tls.tls.server_hostname == "localhost"  # SNI and the name checked
    finally:
        tcp.close()
    plain, none = await open_socket(("http", "127.0.0.1", tls_server.port), context)
    plain.close()
    assert none is None


async def test_retries_repeat_only_failed_connects() -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise httpx.ConnectError("refused")
        return "connected"

    assert await with_retries(flaky, 2) == "connected"
    attempts.clear()
    with pytest.raises(httpx.ConnectError):
        await with_retries(flaky, 1)
    assert len(attempts) == 2

    async def broken() -> str:
        attempts.append(1)
        raise httpx.ReadError("not a connect failure")

    attempts.clear()
    with pytest.raises(httpx.ReadError):
        await with_retries(broken, 5)
    assert len(attempts) == 1
