"""One HTTP/1.1 connection of :class:`~patient_sidekiq.http.http1_transport.H11Transport`:
opening it, and moving its bytes.

Plain TCP is read and written on the descriptor itself (``os.read``/``os.write``, waiting on
trio only when the kernel has nothing): trio's socket wrapper took two trips through the
scheduler per call even when the bytes were ready. TLS stays on trio's ``SSLStream``.
Connections are opened by :mod:`~patient_sidekiq.http.connect`, as HTTP/2's are.

Errors are httpx's: ReadError / WriteError (from the OS or trio error). Touches no Redis keys.
"""

from __future__ import annotations

import os
import select
import ssl
from typing import Final, cast

import httpx
import trio

from patient_sidekiq.http.connect import open_stream
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
    """A new connection to ``origin`` (:func:`~patient_sidekiq.http.connect.open_stream`)."""
    stream, tcp = await open_stream(origin, ssl_context)
    return Connection(origin, stream, tcp)


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
