"""One HTTP/1.1 connection of :class:`~patient_sidekiq.http.http1_transport.H11Transport`:
opening it, and moving its bytes.

Bytes are read and written on the descriptor itself (``os.read``/``os.write``, waiting on
trio only when the kernel has nothing): trio's socket wrapper took two trips through the
scheduler per call even when the bytes were ready. TLS runs on the same descriptor
(:class:`~patient_sidekiq.http.tls_session.TlsSession`) rather than trio's ``SSLStream``.
Connections are opened by :mod:`~patient_sidekiq.http.connect`, as HTTP/2's are.

Errors are httpx's: ReadError / WriteError (from the OS, ssl or trio error). Touches no Redis
keys.
"""

from __future__ import annotations

import os
import select
import ssl
from typing import Final

import httpx
import trio

from patient_sidekiq.http.connect import open_socket
from patient_sidekiq.http.http1_codec import ResponseParser
from patient_sidekiq.http.targets import Origin
from patient_sidekiq.http.tls_session import TlsSession

__all__ = ["KEEPALIVE_EXPIRY", "Connection", "open_connection", "receive_some", "send_all"]

KEEPALIVE_EXPIRY: Final = 5.0
_READ_SIZE: Final = 64 * 1024


class Connection:
    """One HTTP/1.1 connection: its socket, its TLS session (https) and the response being
    read."""

    __slots__ = ("fd", "idle_since", "origin", "parser", "received", "tcp", "tls")

    def __init__(self, origin: Origin, tcp: trio.SocketStream, tls: TlsSession | None) -> None:
        self.origin = origin
        self.tcp = tcp
        # Read and written on the descriptor itself: trio's socket wrapper takes two trips
        # through the scheduler per call even when the kernel has the bytes ready (~8 % of
        # the CPU per job), and its SSLStream ~18 % more.
        self.fd = tcp.socket.fileno()
        self.tls = tls
        self.parser: ResponseParser | None = None  # the current (or last) response
        self.idle_since = 0.0
        self.received = False  # whether the current response has begun to arrive

    def reusable(self, now: float) -> bool:
        """Whether this idle connection may carry another request."""
        if now - self.idle_since > KEEPALIVE_EXPIRY:
            return False
        if self.tls is not None and self.tls.buffered():
            return False  # bytes read past the response: no reusable state
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
    """A new connection to ``origin`` (:func:`~patient_sidekiq.http.connect.open_socket`)."""
    tcp, tls = await open_socket(origin, ssl_context)
    return Connection(origin, tcp, tls)


async def send_all(conn: Connection, data: bytes) -> None:
    if conn.tls is None:
        await _write_fd(conn, data)
    else:
        await conn.tls.send(conn.fd, data)


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
    if conn.tls is not None:
        return await conn.tls.receive(conn.fd)
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
