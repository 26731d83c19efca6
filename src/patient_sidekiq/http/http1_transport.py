"""H11Transport: a lean HTTP/1.1 transport of our own over trio (named for h11, its first parser).

httpx's own transport goes through httpcore, whose per-request pool bookkeeping, nested
context managers and per-operation ``fail_after`` scopes cost about as much CPU as the HTTP
parsing itself. For plain HTTP/1.1 (and HTTPS pinned to HTTP/1.1) this transport does only
what the worker needs:

* One pool of idle connections per origin ``(scheme, host, port)``, used as a stack (the
  most recently used connection first). There is no global limit: the worker's capacity
  bounds the number of requests in flight.
* An idle connection is reused only if its last response was read to the end and allows
  reuse (``http1_codec.ResponseParser.reusable``), it has been idle for
  less than :data:`KEEPALIVE_EXPIRY` seconds, and its socket is not readable (a zero-timeout
  poll: a server that closed it shows EOF, and stray bytes are no reusable state either).
  Idle connections past the expiry are also swept, at most once a second, when a
  connection is returned.
* If a reused connection fails before the first byte of the response (the server closed
  it as the request went out), an idempotent request (GET, PUT, DELETE) is sent once more
  on a new connection; a POST or PATCH fails with the connection error instead, since the
  server may have acted on it.
* A connection goes back to its pool only when its response was read to the end and may
  be reused; anything else (an error, cancellation, a body left unread,
  ``Connection: close``, HTTP/1.0, a HEAD response) closes it.
* Timeouts: ``request.extensions["timeout"]`` ``connect`` / ``write`` / ``read`` apply to
  each connect, write and read (httpx.ConnectTimeout / WriteTimeout / ReadTimeout); the
  caller applies the overall deadline.
* Errors are httpx's: ConnectError (from the OSError, or from the ssl.SSLError of a failed
  handshake), ReadError / WriteError (from the OS, ssl or trio error), RemoteProtocolError (a
  malformed response, or EOF before its end). ``settings.retries`` extra connect attempts
  follow a failed connect (0 s, then 0.5 s, 1 s … apart, as httpcore's ``retries``).

The bytes on the wire are written and parsed by :mod:`~patient_sidekiq.http.http1_codec`
(llhttp; h11 only validates unusual requests); connections are opened, read and written by
:mod:`~patient_sidekiq.http.http1_connection`. Request bodies are ``request.content`` bytes,
framed by the ``content-length`` httpx adds.
No proxies (those stay on httpx) and no HTTP/2. Touches no Redis keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from time import monotonic
from typing import Final

import httpx
import trio

from patient_sidekiq.errors import TlsUnexpectedEofError
from patient_sidekiq.http.connect import open_plain, open_socket, with_retries
from patient_sidekiq.http.http1_codec import ResponseParser, encode_plain, encode_request
from patient_sidekiq.http.http1_connection import (
    KEEPALIVE_EXPIRY,
    Connection,
    receive_some,
    send_all,
)
from patient_sidekiq.http.settings import HttpSettings, ssl_context_for
from patient_sidekiq.http.targets import DEFAULT_PORTS, DirectTarget, Origin

__all__ = ["KEEPALIVE_EXPIRY", "DirectResponse", "H11Transport"]

_SWEEP_INTERVAL: Final = 1.0
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_INF: Final = float("inf")


class H11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over trio, with per-origin keep-alive pools (see module doc)."""

    def __init__(self, settings: HttpSettings) -> None:
        self._ssl_context = ssl_context_for(settings)
        self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._retries = max(0, settings.retries)
        self._idle: dict[Origin, list[Connection]] = {}
        self._next_sweep = 0.0
        self._closed = False

    def idle_connections(self) -> int:
        """How many idle connections the pools hold (for tests and diagnostics)."""
        return sum(len(stack) for stack in self._idle.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return once its headers are in; the body streams after."""
        url = request.url
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"Unsupported URL protocol {scheme!r}")
        origin = (scheme, url.host, url.port or DEFAULT_PORTS[scheme])
        head = self._encode(request)
        timeouts = request.extensions.get("timeout") or {}
        parser, body = await self._request(origin, head, request.method in _IDEMPOTENT, timeouts)
        return httpx.Response(
            parser.status,
            headers=parser.headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": parser.reason},
        )

    async def send(
        self,
        target: DirectTarget,
        method: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> DirectResponse:
        """Send a request without building an ``httpx.Request`` (the worker's hot path), and
        return its response without an ``httpx.Response`` either.

        ``target`` comes from :func:`direct_target`; ``host`` and ``content-length`` are
        added as httpx adds them.
        """
        method_name = method.upper()
        content = body or b""
        # Every request states its length, an empty body too ("content-length: 0"), as
        # the gem's HTTP/1 client writes it; servers and signatures may see the difference.
        data = encode_plain(method_name, target.path, target.host_header, headers, content)
        if data is None:
            fields = [(b"host", target.host_header.encode("ascii"))]
            fields += [
                (name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()
            ]
            fields.append((b"content-length", str(len(content)).encode("ascii")))
            method_bytes = method_name.encode("ascii")
            data = encode_request(method_bytes, target.path.encode("ascii"), fields, content)
        head = _Head(data, method_name == "HEAD")
        parser, stream = await self._request(
            target.origin, head, method_name in _IDEMPOTENT, timeouts
        )
        return DirectResponse(parser.status, parser.headers, stream)

    async def _request(
        self,
        origin: Origin,
        head: _Head,
        idempotent: bool,
        timeouts: Mapping[str, object],
    ) -> tuple[ResponseParser, _Body]:
        read_timeout = _seconds(timeouts.get("read"))
        write_timeout = _seconds(timeouts.get("write"))
        conn = self._idle_connection(origin)
        if conn is not None:
            try:
                return await self._exchange(conn, head, write_timeout, read_timeout, True)
            except _StaleConnection as stale:
                if not idempotent:
                    cause = stale.__cause__
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise httpx.ReadError("connection closed by the server") from stale
                # closed by the server as we reused it: once more, on a new one
        connect_timeout = _seconds(timeouts.get("connect"))
        fresh, sent = await with_retries(
            lambda: self._open(origin, connect_timeout, head.data), self._retries
        )
        return await self._exchange(fresh, head, write_timeout, read_timeout, False, sent)

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their response does."""
        self._closed = True
        pools, self._idle = self._idle, {}
        for stack in pools.values():
            for conn in stack:
                conn.close()
        await trio.lowlevel.checkpoint()

    # --- connections ------------------------------------------------------------------

    def _idle_connection(self, origin: Origin) -> Connection | None:
        stack = self._idle.get(origin)
        if not stack:
            return None
        now = monotonic()
        while stack:
            conn = stack.pop()
            if conn.reusable(now):
                return conn
            conn.close()
        return None

    def _release(self, conn: Connection) -> None:
        """Return a connection whose response was read to the end, or close it."""
        parser = conn.parser
        if self._closed or parser is None or not parser.reusable:
            conn.close()
            return
        now = monotonic()
        conn.idle_since = now
        stack = self._idle.get(conn.origin)
        if stack is None:
            self._idle[conn.origin] = [conn]
        else:
            stack.append(conn)
        if now >= self._next_sweep:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close idle connections past the keep-alive expiry (the oldest are at the bottom)."""
        self._next_sweep = now + _SWEEP_INTERVAL
        limit = now - KEEPALIVE_EXPIRY
        empty: list[Origin] = []
        for origin, stack in self._idle.items():
            expired = 0
            while expired < len(stack) and stack[expired].idle_since < limit:
                stack[expired].close()
                expired += 1
            if expired:
                del stack[:expired]
            if not stack:
                empty.append(origin)
        for origin in empty:
            del self._idle[origin]

    async def _open(self, origin: Origin, timeout: float, data: bytes) -> tuple[Connection, int]:
        """A new connection to ``origin``, and how many bytes of the request (``data``) it
        already carried: plain HTTP writes them as it connects (see connect.open_plain)."""
        deadline = _tighter_deadline(timeout)
        if deadline is None:  # the request's own deadline comes first: no scope of our own
            return await self._connect(origin, data)
        with trio.CancelScope(deadline=deadline):
            return await self._connect(origin, data)
        raise httpx.ConnectTimeout(f"Timed out connecting to {origin[1]}:{origin[2]}")

    async def _connect(self, origin: Origin, data: bytes) -> tuple[Connection, int]:
        scheme, host, port = origin
        if scheme == "https":
            sock, tls = await open_socket(origin, self._ssl_context)
            return Connection(origin, sock, tls), 0
        sock, sent = await open_plain(host, port, data)
        return Connection(origin, sock, None), sent

    # --- one exchange ---------------------------------------------------------------------

    @staticmethod
    def _encode(request: httpx.Request) -> _Head:
        headers = request.headers.raw
        if "content-length" not in request.headers and "transfer-encoding" not in request.headers:
            headers = [*headers, (b"content-length", b"0")]  # as in send(): the gem's way
        method = request.method.encode("ascii")
        data = encode_request(method, request.url.raw_path, headers, request.content)
        return _Head(data, method == b"HEAD")

    async def _exchange(
        self,
        conn: Connection,
        head: _Head,
        write_timeout: float,
        read_timeout: float,
        reused: bool,
        sent: int = 0,
    ) -> tuple[ResponseParser, _Body]:
        """Write the request (what ``sent`` leaves of it) and read the response head on
        ``conn``.

        Raises :class:`_StaleConnection` (caused by the httpx error) if ``reused`` and the
        connection fails before any byte of the response arrived.
        """
        data = head.data if sent == 0 else head.data[sent:]
        try:
            if not data:
                pass  # all written while connecting
            elif write_timeout == _INF:  # the worker's case: one coroutine fewer per request
                await send_all(conn, data)
            else:
                await _send_request(conn, data, write_timeout)
            parser = await _read_head(conn, read_timeout, head.head_only)
        except httpx.TransportError as exc:
            conn.close()
            if reused and not conn.received and not isinstance(exc, httpx.TimeoutException):
                raise _StaleConnection from exc
            raise
        except BaseException:
            conn.close()
            raise
        return parser, _Body(self, conn, read_timeout)


class DirectResponse:
    """What :meth:`H11Transport.send` returns: status, the raw header fields (names
    lowercase, in order) and the body stream, to be closed once read."""

    __slots__ = ("headers", "status", "stream")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], stream: _Body) -> None:
        self.status = status
        self.headers = headers
        self.stream = stream


class _Head:
    """A request ready to go: its bytes, and whether it is a HEAD (no response body)."""

    __slots__ = ("data", "head_only")

    def __init__(self, data: bytes, head_only: bool) -> None:
        self.data = data
        self.head_only = head_only


async def _send_request(conn: Connection, data: bytes, timeout: float) -> None:
    deadline = _tighter_deadline(timeout)
    if deadline is None:  # the caller's deadline comes first: no scope of our own
        await send_all(conn, data)
        return
    with trio.CancelScope(deadline=deadline):
        await send_all(conn, data)
        return
    raise httpx.WriteTimeout("Timed out writing the request")


def _tighter_deadline(timeout: float) -> float | None:
    """The deadline ``timeout`` sets from now, or None when an enclosing one ends sooner.

    The worker wraps each request in its own overall deadline, and a per-read scope that
    could never fire is pure cost (a cancel scope per read was ~10 % of the CPU per job).
    """
    if timeout == _INF:  # no limit of its own: not even the clock needs reading
        return None
    deadline = trio.current_time() + timeout
    return deadline if deadline < trio.current_effective_deadline() else None


async def _read_head(conn: Connection, timeout: float, head_only: bool) -> ResponseParser:
    parser = conn.parser
    if parser is None:
        parser = conn.parser = ResponseParser(head_only=head_only)
    else:  # a pooled connection: its last response was reusable (see _release)
        parser.restart(head_only=head_only)
    conn.received = False
    while not parser.head_done:
        chunk = await (receive_some(conn) if timeout == _INF else _receive(conn, timeout))
        if chunk:
            conn.received = True
            parser.feed(chunk)
        else:
            if not conn.received and conn.tls is not None and conn.tls.ragged_eof:
                # A ReadError like any EOF here, so a reused connection is still retried.
                error = TlsUnexpectedEofError()
                raise httpx.ReadError(str(error)) from error
            parser.feed_eof()
    return parser


class _StaleConnection(Exception):
    """A reused connection failed before the response began; its cause is the httpx error."""


async def _receive(conn: Connection, timeout: float) -> bytes:
    """Read the next bytes from ``conn`` (b"" at EOF), as httpx errors."""
    deadline = _tighter_deadline(timeout)
    if deadline is None:
        return await receive_some(conn)
    with trio.CancelScope(deadline=deadline):
        return await receive_some(conn)
    raise httpx.ReadTimeout("Timed out reading the response")


class _Body(httpx.AsyncByteStream):
    """The response body, chunk by chunk; closing it pools or closes the connection."""

    def __init__(self, transport: H11Transport, conn: Connection, read_timeout: float) -> None:
        self._transport = transport
        self._conn: Connection | None = conn
        self._read_timeout = read_timeout
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None or self._done:
            raise StopAsyncIteration
        parser = conn.parser
        assert parser is not None
        timeout = self._read_timeout
        try:
            # No coroutine of its own: a body already parsed (most of them, with the head)
            # comes back without one.
            while True:
                pieces = parser.take_body()
                if pieces:
                    # several pieces parsed at once go out as one chunk (fewer iterations)
                    return pieces[0] if len(pieces) == 1 else b"".join(pieces)
                if parser.complete:
                    break
                data = await (receive_some(conn) if timeout == _INF else _receive(conn, timeout))
                if data:
                    parser.feed(data)
                else:
                    parser.feed_eof()
        except BaseException:
            self._discard()
            raise
        self._done = True
        raise StopAsyncIteration

    def take_whole(self) -> bytes | None:
        """The whole body when it has all been parsed already (most bodies arrive with
        their head), else None and nothing taken: read it by iterating. Spares the
        iteration's coroutines and its StopAsyncIteration."""
        conn = self._conn
        if conn is None or self._done:
            return None
        parser = conn.parser
        assert parser is not None
        if not parser.complete:
            return None
        self._done = True
        pieces = parser.take_body()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """:meth:`aclose` without a coroutine: pool the connection if the body was read to
        the end, else close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._done:
                self._transport._release(conn)
            else:
                conn.close()

    async def aclose(self) -> None:
        self.close()


def _seconds(value: object) -> float:
    """A timeout from the request's extensions: None (or anything not a number) is no limit."""
    return float(value) if isinstance(value, int | float) else _INF
