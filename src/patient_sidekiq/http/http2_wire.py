"""The bytes of one HTTP/2 connection (:mod:`~patient_sidekiq.http.http2_connection`): TLS
run on the socket's descriptor, or plain TCP for h2c.

HTTP/2 went through trio's ``SSLStream`` (over a ``SocketStream``), whose locks, conflict
detectors, retry loop and a scheduler trip per transport call cost more than the TLS work
itself. Here, as the HTTP/1.1 transport's :class:`~patient_sidekiq.http.tls_session.TlsSession`
does (whose handshake opens the connection), ``ssl.SSLObject`` runs over memory BIOs and the
raw bytes move with ``os.read``/``os.write`` on the non-blocking descriptor; trio is only
asked to wait when the kernel has nothing.

The connection's reader and writer tasks share one TLS session, so the roles are split:
only :meth:`Wire.send` (the writer) writes to the socket, including the answers the TLS
layer itself wants to send after a read (:meth:`Wire.has_output` tells the connection to
wake its writer); only :meth:`Wire.receive` (the reader) reads. A read hands over every
whole record already received, so a burst of responses costs one pass through h2.

Behaviour is ``SSLStream``'s with ``https_compatible=True``: EOF without close_notify reads
as a plain EOF (b""), and a TLS failure raises its ``ssl.SSLError`` (``ruby_errors`` reads
it in the chain). Errors: OSError (ssl.SSLError included) and trio.ClosedResourceError.
The descriptor is asked of the socket at every call, so once the connection closed it a
late call fails (EBADF) rather than touch a descriptor number since reused. Touches no
Redis keys.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Final

import trio

from patient_sidekiq.http.tls_session import TlsSession

__all__ = ["Wire"]

_READ_SIZE: Final = 256 * 1024


class Wire:
    """One connection's socket, and its TLS session for ``https`` (None: h2c)."""

    __slots__ = ("_error", "_incoming", "_outgoing", "_tls", "sock")

    def __init__(self, sock: socket.socket, session: TlsSession | None) -> None:
        self.sock = sock
        self._tls = session.tls if session is not None else None
        self._incoming = session.incoming if session is not None else None
        self._outgoing = session.outgoing if session is not None else None
        self._error: ssl.SSLError | None = None  # met after records still to hand over

    def close(self) -> None:
        """Close the socket, first waking any task trio holds waiting on it.

        The reader task may be parked in ``wait_readable``: closing the descriptor alone
        would leave it there for good (epoll forgets a closed descriptor without an event),
        and trio would still count the number as watched, so a new socket given the same
        number would fail its first wait with BusyResourceError.
        """
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()

    def has_output(self) -> bool:
        """Whether the TLS layer has bytes of its own for the server (the writer sends them)."""
        outgoing = self._outgoing
        return outgoing is not None and outgoing.pending > 0

    async def receive(self) -> bytes:
        """The next bytes from the server, all those already in; b"" at EOF."""
        tls = self._tls
        incoming = self._incoming
        if tls is None or incoming is None:
            return await self._read_raw()
        if self._error is not None:
            raise self._error
        while True:
            # Only ask the TLS layer when it has bytes: an SSLWantReadError costs more
            # than the check.
            if incoming.pending or tls.pending():
                try:
                    data = tls.read(_READ_SIZE)
                except ssl.SSLWantReadError:
                    pass  # a partial record, or only a session ticket
                except ssl.SSLError as exc:
                    if _is_eof(exc):
                        return b""
                    raise
                else:
                    return self._more(tls, incoming, data) if data else data
            raw = await self._read_raw()
            if not raw:
                incoming.write_eof()
                try:
                    return tls.read(_READ_SIZE)  # b"" after close_notify, else SSLEOFError
                except ssl.SSLError as exc:
                    if _is_eof(exc):  # closed without close_notify: an EOF for HTTP
                        return b""
                    raise
            incoming.write(raw)

    def _more(self, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, data: bytes) -> bytes:
        """``data`` and the whole records after it already received."""
        parts = [data]
        while incoming.pending or tls.pending():
            try:
                piece = tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:  # after what came before it, as SSLStream would
                self._error = exc
                break
            if not piece:  # close_notify: the next receive reads the EOF
                break
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def send(self, data: bytes) -> None:
        """Write ``data`` (encrypted for ``https``) and what the TLS layer has queued."""
        tls = self._tls
        outgoing = self._outgoing
        if tls is not None and outgoing is not None:
            if data:
                tls.write(data)
            data = outgoing.read()
        view: bytes | memoryview = data
        sock = self.sock
        while len(view):
            try:
                sent = os.write(sock.fileno(), view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            view = memoryview(view)[sent:]  # a view: no copy of what is left per write

    async def _read_raw(self) -> bytes:
        sock = self.sock
        while True:
            try:
                return os.read(sock.fileno(), _READ_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)


def _is_eof(exc: ssl.SSLError) -> bool:
    # trio's test: some builds report the ragged EOF as a plain SSLError with this reason.
    return isinstance(exc, ssl.SSLEOFError) or "UNEXPECTED_EOF_WHILE_READING" in str(exc.strerror)
