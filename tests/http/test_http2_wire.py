"""Wire: HTTP/2's TLS on the descriptor, against a TLS server (trio's SSLStream) at the other
end of a real socket pair, driven step by step by the test."""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from patient_sidekiq.http.http2_wire import Wire
from patient_sidekiq.http.tls_session import TlsSession
from tests.support.http import TlsCerts


class Peer:
    """The server end: its TLS stream, and the TCP under it for raw bytes."""

    def __init__(self, tcp: trio.SocketStream, tls: trio.SSLStream[trio.SocketStream]) -> None:
        self.tcp = tcp
        self.tls = tls


@pytest.fixture
async def tls_pair(tls_certs: TlsCerts) -> AsyncIterator[tuple[Wire, Peer]]:
    # Ours is a plain non-blocking socket, as connect.open_socket hands the transport.
    ours, raw_theirs = socket.socketpair()
    ours.setblocking(False)
    theirs = trio.socket.from_stdlib_socket(raw_theirs)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tls_certs.cert_file, tls_certs.key_file)
    tcp = trio.SocketStream(theirs)
    peer = Peer(tcp, trio.SSLStream(tcp, server_context, server_side=True))
    session = TlsSession(ssl.create_default_context(cafile=str(tls_certs.ca_file)), "127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.tls.do_handshake)
        await session.handshake(ours.fileno())
    yield Wire(ours, session), peer
    ours.close()
    theirs.close()


async def test_a_read_hands_over_every_record_already_in(tls_pair: tuple[Wire, Peer]) -> None:
    wire, peer = tls_pair
    for piece in (b"one", b"two", b"three"):  # a record each
        await peer.tls.send_all(piece)
    assert await wire.receive() == b"onetwothree"


@pytest.mark.parametrize("close_notify", [True, False])
async def test_eof_with_or_without_close_notify(
    tls_pair: tuple[Wire, Peer], close_notify: bool
) -> None:
    wire, peer = tls_pair
    await peer.tls.send_all(b"last")
    if close_notify:
        await peer.tls.aclose()
    else:
        peer.tcp.socket.close()  # as SSLStream(https_compatible=True) read it: a plain EOF
    received = b""
    while data := await wire.receive():
        received += data
    assert received == b"last"
    assert await wire.receive() == b""


async def test_garbage_is_an_ssl_error_after_the_records_before_it(
    tls_pair: tuple[Wire, Peer],
) -> None:
    wire, peer = tls_pair
    await peer.tls.send_all(b"good")
    await peer.tcp.send_all(b"\x17\x03\x03\x00\x05hello")  # application data, not encrypted
    assert await wire.receive() == b"good"
    with pytest.raises(ssl.SSLError):
        await wire.receive()


async def test_bodies_larger_than_a_record_both_ways(tls_pair: tuple[Wire, Peer]) -> None:
    wire, peer = tls_pair
    payload = bytes(range(256)) * 8192  # 2 MiB: many records, writes that block
    echoed = b""

    async def echo() -> None:
        received = 0
        while received < len(payload):
            data = await peer.tls.receive_some(65536)
            received += len(data)
            await peer.tls.send_all(data)

    async with trio.open_nursery() as nursery:  # reading while writing, as a connection does
        nursery.start_soon(echo)
        nursery.start_soon(wire.send, payload)
        while len(echoed) < len(payload):
            echoed += await wire.receive()
    assert echoed == payload
    assert not wire.has_output()


async def test_a_closed_socket_is_never_read_or_written_again(
    tls_pair: tuple[Wire, Peer],
) -> None:
    wire, _ = tls_pair
    wire.close()
    replacement, other = trio.socket.socketpair()  # may take the descriptor number freed
    try:
        await other.send(b"not ours")
        for operation in (wire.receive(), wire.send(b"x")):
            with pytest.raises(OSError, match="Bad file descriptor") as raised:
                await operation
            assert raised.value.errno == errno.EBADF
        assert await replacement.recv(100) == b"not ours"
    finally:
        replacement.close()
        other.close()


async def test_closing_wakes_the_parked_reader_and_frees_the_descriptor(
    tls_pair: tuple[Wire, Peer],
) -> None:
    wire, _ = tls_pair
    woken: list[BaseException] = []

    async def read() -> None:
        try:
            await wire.receive()
        except (trio.ClosedResourceError, OSError) as exc:
            woken.append(exc)

    with trio.fail_after(10):  # a reader left parked would hang here for good
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            wire.close()
    assert len(woken) == 1
    # Trio no longer counts the number as watched: a socket given it can be waited on.
    replacement, other = socket.socketpair()
    with replacement, other:
        replacement.setblocking(False)
        other.send(b"x")
        await trio.lowlevel.wait_readable(replacement)
        assert replacement.recv(10) == b"x"


async def test_plain_tcp_for_h2c() -> None:
    ours, raw_theirs = socket.socketpair()
    ours.setblocking(False)
    theirs = trio.socket.from_stdlib_socket(raw_theirs)
    with ours, theirs:
        wire = Wire(ours, None)
        await wire.send(b"preface")
        assert await theirs.recv(100) == b"preface"
        await theirs.send(b"settings")
        assert await wire.receive() == b"settings"
        assert not wire.has_output()
        theirs.close()
        assert await wire.receive() == b""
