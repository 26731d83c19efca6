"""One HTTP/1.1 connection of :class:`~patient_sidekiq.http.http1_transport.H11Transport`:
opening it, and moving its bytes.

Plain TCP is read and written on the descriptor itself (``os.read``/``os.write``, waiting on
trio only when the kernel has nothing): trio's socket wrapper took two trips through the
scheduler per call even when the bytes were ready. TLS stays on trio's ``SSLStream``. A
connection to an IP address is opened with a non-blocking ``connect`` rather than
``trio.open_tcp_stream``, whose happy-eyeballs nursery cost more than the rest of a new
connection when thousands open at once; names still go through trio's resolver.

Errors are httpx's: ConnectError (from the OSError, or from the ssl.SSLError of a failed
handshake), ReadError / WriteError (from the OS or trio error). Touches no Redis keys.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import socket
import ssl
from typing import Final, cast

import httpx
import trio

from patient_sidekiq.http.http1_codec import ResponseParser
from patient_sidekiq.http.targets import Origin

__all__ = ["KEEPALIVE_EXPIRY", "Connection", "open_connection", "receive_some", "send_all"]

KEEPALIVE_EXPIRY: Final = 5.0
_READ_SIZE: Final = 64 * 1024


class Connection:
    """One HTTP/1.1 connection: the trio stream, its raw socket and the response being read."""

    __slots__ = ("fd", "idle_since", "origin", "parser", "plain", "received", "stream", "tcp")

    def __init__(self, origin: Origin, stream: trio.abc.Stream, tcp: trio.SocketStream) -> None:
        self.origin = origin
        self.stream = stream
        self.tcp = tcp
        self.fd = tcp.socket.fileno()
        # Plain TCP is read and written on the descriptor itself: trio's socket wrapper
        # takes two trips through the scheduler per call even when the kernel has the
        # bytes ready (~8 % of the CPU per job). TLS stays on trio's SSLStream.
        self.plain = stream is tcp
        self.parser: ResponseParser | None = None  # the current (or last) response
        self.idle_since = 0.0
        self.received = False  # whether the current response has begun to arrive

    def reusable(self, now: float) -> bool:
        """Whether this idle connection may carry another request."""
        if now - self.idle_since > KEEPALIVE_EXPIRY:
            return False
        try:
            readable, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable  # readable: EOF, or bytes nobody asked for

    def close(self) -> None:
        """Close the socket at once (no TLS close_notify: HTTP needs none)."""
        self.fd = -1  # the number may be reused at once: never read or write it again
        self.tcp.socket.close()


async def open_connection(origin: Origin, ssl_context: ssl.SSLContext) -> Connection:
    """A new connection to ``origin``: TCP, then TLS for ``https``.

    Raises httpx.ConnectError when either fails.
    """
    scheme, host, port = origin
    family = _literal_family(host)
    try:
        if family is None:
            tcp = await trio.open_tcp_stream(host, port)
        else:
            tcp = await _connect_literal(family, host, port)
    except OSError as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
    if scheme != "https":
        return Connection(origin, tcp, tcp)
    stream = trio.SSLStream(tcp, ssl_context, server_hostname=host, https_compatible=True)
    try:
        await stream.do_handshake()
    except (trio.BrokenResourceError, OSError) as exc:
        tcp.socket.close()
        cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
        raise httpx.ConnectError(str(cause) or type(cause).__name__) from exc
    except BaseException:
        tcp.socket.close()
        raise
    return Connection(origin, stream, tcp)


@functools.lru_cache(maxsize=1024)
def _literal_family(host: str) -> int | None:
    """The address family of an IP literal host, None for a name to resolve."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


async def _connect_literal(family: int, host: str, port: int) -> trio.SocketStream:
    """Connect to an IP address without trio.open_tcp_stream's happy-eyeballs nursery, which
    cost more than the rest of a new connection (thousands are opened at once in a fan-out).
    Failures read as trio's do ("Error connecting to (host, port): …"), which ruby_errors
    turns into the gem's ``connect(2) for host:port`` message."""
    address: tuple[str, int] | tuple[str, int, int, int] = (
        (host, port) if family == socket.AF_INET else (host, port, 0, 0)
    )
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        error = sock.connect_ex(address)
        if error == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except BaseException:
        sock.close()
        raise
    if error:
        sock.close()
        raise OSError(error, f"Error connecting to {address!r}: {os.strerror(error)}")
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def send_all(conn: Connection, data: bytes) -> None:
    if conn.plain:
        await _write_fd(conn, data)
        return
    try:
        await conn.stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise httpx.WriteError(str(exc.__cause__ or exc) or type(exc).__name__) from exc


async def _write_fd(conn: Connection, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = os.write(conn.fd, view)
            view = view[sent:]
        except BlockingIOError:
            try:
                await trio.lowlevel.wait_writable(conn.fd)
            except trio.ClosedResourceError as exc:
                raise httpx.WriteError("connection closed") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc


async def receive_some(conn: Connection) -> bytes:
    if conn.plain:
        while True:
            try:
                return os.read(conn.fd, _READ_SIZE)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(conn.fd)
                except trio.ClosedResourceError as exc:
                    raise httpx.ReadError("connection closed") from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
    try:
        data = await conn.stream.receive_some(_READ_SIZE)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise httpx.ReadError(str(exc.__cause__ or exc) or type(exc).__name__) from exc
    return cast("bytes", data)  # SSLStream's bytearray suits the parser as well
