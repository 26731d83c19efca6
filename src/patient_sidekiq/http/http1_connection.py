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
import socket
from typing import Final

import httpx
import trio

from patient_sidekiq.http.http1_codec import ResponseParser
from patient_sidekiq.http.targets import Origin
from patient_sidekiq.http.tls_session import TlsSession

__all__ = ["KEEPALIVE_EXPIRY", "Connection", "receive_some", "send_all"]

KEEPALIVE_EXPIRY: Final = 5.0
_READ_SIZE: Final = 64 * 1024


class Connection:
    """One HTTP/1.1 connection: its socket, its TLS session (https) and the response being
    read."""

    __slots__ = ("fd", "idle_since", "origin", "parser", "received", "sock", "tls")

    def __init__(self, origin: Origin, sock: socket.socket, tls: TlsSession | None) -> None:
        self.origin = origin
        # A plain socket, no trio wrapper: trio's socket wrapper takes two trips through
        # the scheduler per call even when the kernel has the bytes ready (~8 % of the CPU
        # per job), and its SSLStream ~18 % more. Read and written on the descriptor.
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = tls
        self.parser: ResponseParser | None = None  # the current (or last) response
        self.idle_since = 0.0  # time.monotonic(): the pool's clock (trio's costs a few calls)
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
        # No trio.lowlevel.notify_closing (an epoll unregister and an exception per close):
        # every wait on the descriptor is made by the task that owns the connection and
        # has ended (trio then forgets it) before that task or the pool closes it.
        self.sock.close()


async def send_all(conn: Connection, data: bytes) -> None:
    if conn.tls is not None:
        await conn.tls.send(conn.fd, data)
        return
    # A request usually fits the socket's buffer: one write, no coroutine to wait in.
    try:
        sent = os.write(conn.fd, data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
    if sent < len(data):
        await _write_fd(conn, memoryview(data)[sent:])


async def _write_fd(conn: Connection, view: memoryview) -> None:
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
