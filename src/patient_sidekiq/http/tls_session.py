"""TLS for an HTTP connection, run on the socket's descriptor.

The stdlib's ``ssl.SSLObject`` encrypts into and decrypts from two memory BIOs; the raw
bytes move with ``os.read``/``os.write`` on the non-blocking descriptor, waiting on trio
(``wait_readable``/``wait_writable``) only when the kernel has nothing. trio's ``SSLStream``
did the same through a trio stream, and its locks, conflict detectors, retry loop and a
scheduler trip per transport call were ~18 % of the CPU per TLS job. HTTP/1.1 reads and
writes through the session itself; HTTP/2 hands it to
:class:`~patient_sidekiq.http.http2_wire.Wire`, which splits the reading and the writing
between the connection's two tasks.

Behaviour is ``SSLStream``'s with ``https_compatible=True``: the same handshake (SNI and the
context's verification), EOF without close_notify reads as a plain EOF (b""), and a TLS
failure keeps its ``ssl.SSLError`` in the chain, as ``ruby_errors`` classifies it.

Errors: :meth:`TlsSession.handshake` raises the ``ssl.SSLError`` / ``OSError`` itself (the
connect step turns it into httpx.ConnectError); :meth:`~TlsSession.send` and
:meth:`~TlsSession.receive` raise httpx.WriteError / ReadError caused by it. Touches no
Redis keys.
"""

from __future__ import annotations

import os
import ssl
from typing import Final

import httpx
import trio

__all__ = ["TlsSession"]

_READ_SIZE: Final = 64 * 1024


class TlsSession:
    """One TLS client session over a descriptor the caller owns (and closes)."""

    __slots__ = ("incoming", "outgoing", "ragged_eof", "tls")

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        self.incoming = ssl.MemoryBIO()  # raw bytes from the server, not yet decrypted
        self.outgoing = ssl.MemoryBIO()  # encrypted bytes for the server, not yet written
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=host)
        # The server closed TCP without close_notify: read as EOF, but Ruby's OpenSSL
        # refuses it before a response began (the HTTP/1.1 transport asks).
        self.ragged_eof = False

    def buffered(self) -> bool:
        """Whether bytes from the server wait here, unread (an idle connection with any is
        not reusable: its socket may look quiet while the TLS layer is not)."""
        return self.incoming.pending > 0 or self.tls.pending() > 0

    async def handshake(self, fd: int) -> None:
        """Run the TLS handshake (raises ssl.SSLError, OSError, trio.ClosedResourceError)."""
        tls = self.tls
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            await self._flush(fd)
            raw = await _read_raw(fd)
            if raw:
                self.incoming.write(raw)
            else:
                self.incoming.write_eof()  # the next do_handshake raises SSLEOFError
        # The client's last flight (TLS 1.3: its Finished) goes out before any request.
        await self._flush(fd)

    async def send(self, fd: int, data: bytes) -> None:
        """Encrypt and write all of ``data`` (httpx.WriteError on failure)."""
        try:
            self.tls.write(data)
            await self._flush(fd)
        except OSError as exc:  # ssl.SSLError included: ruby_errors finds it in the chain
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        except trio.ClosedResourceError as exc:
            raise httpx.WriteError("connection closed") from exc

    async def receive(self, fd: int) -> bytes:
        """The next decrypted bytes, b"" at EOF (httpx.ReadError on failure)."""
        # One flat loop (no helper coroutines): this runs a few times per request.
        tls = self.tls
        incoming = self.incoming
        try:
            while True:
                # Only ask the TLS layer when it has bytes: an SSLWantReadError costs more
                # than the check.
                if incoming.pending or tls.pending():
                    try:
                        data = tls.read(_READ_SIZE)
                        break
                    except ssl.SSLWantReadError:
                        pass  # a partial record, or only a session ticket
                try:
                    raw = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
                    continue
                if not raw:
                    incoming.write_eof()
                    data = tls.read(_READ_SIZE)  # b"" after close_notify, else SSLEOFError
                    break
                incoming.write(raw)
            if self.outgoing.pending:  # a post-handshake message wanted an answer
                await self._flush(fd)
        except ssl.SSLError as exc:
            if _is_eof(exc):  # the server closed TCP without close_notify: an EOF for HTTP
                self.ragged_eof = True
                return b""
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        except trio.ClosedResourceError as exc:
            raise httpx.ReadError("connection closed") from exc
        return data

    async def _flush(self, fd: int) -> None:
        """Write what the TLS layer has for the server (raises OSError, ClosedResourceError)."""
        outgoing = self.outgoing
        if not outgoing.pending:
            return
        data: bytes | memoryview = outgoing.read()
        while True:
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                continue
            if sent == len(data):
                return
            data = memoryview(data)[sent:]  # a view: no copy of what is left per write


async def _read_raw(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, _READ_SIZE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)


def _is_eof(exc: ssl.SSLError) -> bool:
    # trio's test: some builds report the ragged EOF as a plain SSLError with this reason.
    return isinstance(exc, ssl.SSLEOFError) or "UNEXPECTED_EOF_WHILE_READING" in str(exc.strerror)
