"""HTTP/1.1 bytes for :class:`~patient_sidekiq.http.http1_transport.H11Transport`.

Requests are written straight to bytes and responses are parsed by llhttp (Node's C
parser, through ``httptools``). h11, which the transport used before, is pure Python: it
cost about 100 µs per exchange, a fifth of the worker's CPU per job, where llhttp parses
the same response in about 5 µs. h11 stays as the validator of the unusual: a request
whose method, target or headers fail the cheap check here is built by h11, which either
refuses it (``httpx.LocalProtocolError``, as before) or writes the same bytes.

Responses keep h11's reading, so that callbacks and error classification see what they
saw before: header names lowercase, values without surrounding blanks, 1xx responses
skipped, HTTP/1.0 and ``connection: close`` never reused, and h11's messages for a
response cut short (``http/ruby_errors.py`` maps them to the gem's Ruby errors).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

import h11
import httptools
import httpx

__all__ = ["MAX_HEAD_SIZE", "ResponseParser", "encode_plain", "encode_request"]

MAX_HEAD_SIZE: Final = 100 * 1024
"""Bytes a response head may take (h11's ``max_incomplete_event_size`` as we set it)."""

# What h11 accepts without question: token names, and values of visible ASCII with inner
# spaces or tabs. Anything else (obs-text, blanks at the ends, control characters) goes to
# h11, which decides.
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE: Final = re.compile(rb"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")
_TARGET: Final = re.compile(rb"[\x21-\x7e]+")
_BLANKS: Final = b" \t"
# The same checks over a whole head written as text, each header as "name:\x00value\r\n":
# neither a name nor a value may hold NUL, CR or LF, so the separators cannot be forged
# and one match checks every part.
_PLAIN_HEAD: Final = re.compile(
    r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/1\.1\r\n"
    r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:\x00(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?\r\n)*"
    r"\r\n"
)


def encode_plain(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes
) -> bytes | None:
    """:func:`encode_request`'s bytes for ``host``, then ``headers``, then the body's
    ``content-length``, when every part passes the same checks; None when one does not
    (:func:`encode_request` then decides). One match over the whole head instead of one per
    part: the matches were most of the cost of writing a request."""
    block = "".join([f"{name}:\x00{value}\r\n" for name, value in headers.items()])
    head = (
        f"{method} {target} HTTP/1.1\r\nhost:\x00{host}\r\n{block}"
        f"content-length:\x00{len(body)}\r\n\r\n"
    )
    if _PLAIN_HEAD.fullmatch(head) is None:
        return None
    data = head.replace(":\x00", ": ").encode("ascii")
    return data + body if body else data


def encode_request(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The request's bytes: request line, headers in order, blank line, ``body``.

    ``headers`` must already state the body's framing (``content-length``). Raises
    ``httpx.LocalProtocolError`` for what h11 refuses to send.
    """
    plain = (
        _TOKEN.fullmatch(method) is not None
        and _TARGET.fullmatch(target) is not None
        and all(
            _TOKEN.fullmatch(name) is not None and _VALUE.fullmatch(value) is not None
            for name, value in headers
        )
    )
    if not plain:
        return _encode_with_h11(method, target, headers, body)
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


def _encode_with_h11(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> bytes:
    connection = h11.Connection(h11.CLIENT)
    try:
        data = connection.send(h11.Request(method=method, target=target, headers=list(headers)))
        if body:
            data = (data or b"") + (connection.send(h11.Data(data=body)) or b"")
        return (data or b"") + (connection.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc)) from exc


class ResponseParser:
    """One response read from a connection, fed bytes as they arrive.

    After :meth:`feed`, ``head_done`` says whether status and headers are known,
    ``take_body()`` gives the body bytes parsed so far, and ``complete`` whether the
    response ended. ``head_only`` (a HEAD request) ends it with its headers. Errors are
    ``httpx.RemoteProtocolError`` with h11's wording.
    """

    __slots__ = (
        "_body",
        "_chunked",
        "_expected",
        "_head_bytes",
        "_head_only",
        "_informational",
        "_parser",
        "_received",
        "_trailing",
        "complete",
        "head_done",
        "headers",
        "reason",
        "status",
        "version",
    )

    def __init__(self, *, head_only: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.restart(head_only=head_only)

    def restart(self, *, head_only: bool = False) -> None:
        """Get ready for the next response on the same connection, once this one was
        :attr:`reusable` (llhttp, keep-alive, then reads the next message; a new parser
        per response cost more than the rest of the reading)."""
        self._head_only = head_only
        self._body: list[bytes] = []
        self._head_bytes = 0
        self._informational = False
        self._expected: int | None = None
        self._chunked = False
        self._received = 0
        self._trailing = False
        self.status = 0
        self.reason = b""
        self.version = b"1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False

    # --- feeding -----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data`` (the next bytes of the connection; not b"", see :meth:`feed_eof`)."""
        if self.complete:
            self._trailing = True
            return
        if not self.head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.complete:
                # Bytes after the response (a HEAD response's body, or a server talking out
                # of turn): the response stands, the connection is not reused.
                self._trailing = True
                return
            cause = exc.__context__
            if isinstance(cause, httpx.RemoteProtocolError):
                raise cause from None
            raise httpx.RemoteProtocolError(str(exc) or "Invalid HTTP response") from exc
        if not self.head_done and self._head_bytes > MAX_HEAD_SIZE:
            raise httpx.RemoteProtocolError("Receive buffer too long")

    def feed_eof(self) -> None:
        """The server closed the connection: end a body read until close, or fail."""
        if self.complete:
            return
        if not self.head_done:
            if self._head_bytes == 0 and not self._informational_seen():
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            raise httpx.RemoteProtocolError("peer unexpectedly closed connection")
        if self._chunked:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                "(incomplete chunked read)"
            )
        if self._expected is not None:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                f"(received {self._received} bytes, expected {self._expected})"
            )
        self.complete = True  # a body delimited by the end of the connection

    def _informational_seen(self) -> bool:
        # A 1xx response was read and nothing since: h11 reports the close as unexpected.
        return self.status != 0

    def take_body(self) -> list[bytes]:
        """The body bytes parsed since the last call."""
        body, self._body = self._body, []
        return body

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request after this response."""
        if not self.complete or self._trailing or self._head_only or self.version != b"1.1":
            return False
        if self._expected is None and not self._chunked and _has_body(self.status):
            return False  # read until close
        for name, value in self.headers:
            if name == b"connection" and b"close" in value.lower():
                return False
        return True

    # --- llhttp's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _AfterTheEnd
        self.headers = []
        self._informational = False

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.strip(_BLANKS)))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        self.status = status
        if 100 <= status < 200:
            if status == 101:
                raise httpx.RemoteProtocolError("Switching protocols is not supported")
            self._informational = True  # skipped, as h11's client does
            self.reason = b""
            return
        self.version = b"1.1" if parser.get_http_version() == "1.1" else b"1.0"
        self._head_bytes = 0
        self.head_done = True
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit():
                self._expected = int(value)
            elif name == b"transfer-encoding":
                self._chunked = value.lower().endswith(b"chunked")
        if self._head_only or not _has_body(status):
            self._expected = None
            self._chunked = False
            self.complete = True

    def on_body(self, data: bytes) -> None:
        if self.complete:
            raise _AfterTheEnd
        self._received += len(data)
        self._body.append(data)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True


class _AfterTheEnd(Exception):
    """Stops llhttp at bytes that follow a complete response."""


def _has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)
