"""H11Transport: a lean HTTP/1.1 transport (our own client over trio streams).

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
  handshake), ReadError / WriteError (from the trio error), RemoteProtocolError (a
  malformed response, or EOF before its end). ``settings.retries`` extra connect attempts
  follow a failed connect (0 s, then 0.5 s, 1 s … apart, as httpcore's ``retries``).

The bytes on the wire are written and parsed by :mod:`~patient_sidekiq.http.http1_codec`
(llhttp; h11 only validates unusual requests). Request bodies are ``request.content`` bytes,
framed by the ``content-length`` httpx adds.
No proxies (those stay on httpx) and no HTTP/2. Touches no Redis keys.
"""

from __future__ import annotations

import os
import select
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Final, cast

import httpx
import trio

from patient_sidekiq.http.http1_codec import ResponseParser, encode_request
from patient_sidekiq.http.settings import HttpSettings, ssl_context_for
from patient_sidekiq.http.targets import DEFAULT_PORTS, DirectTarget, Origin

__all__ = ["KEEPALIVE_EXPIRY", "H11Transport"]

KEEPALIVE_EXPIRY: Final = 5.0
_READ_SIZE: Final = 64 * 1024
_SWEEP_INTERVAL: Final = 1.0
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_INF: Final = float("inf")


class _Connection:
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


class H11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over trio, with per-origin keep-alive pools (see module doc)."""

    def __init__(self, settings: HttpSettings) -> None:
        self._ssl_context = ssl_context_for(settings)
        self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._retries = max(0, settings.retries)
        self._idle: dict[Origin, list[_Connection]] = {}
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
        return await self._request(origin, head, request.method in _IDEMPOTENT, timeouts)

    async def send(
        self,
        target: DirectTarget,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> httpx.Response:
        """Send a request without building an ``httpx.Request`` (the worker's hot path).

        ``target`` comes from :func:`direct_target`; ``host`` and ``content-length`` are
        added as httpx adds them.
        """
        method_name = method.upper()
        content = body or b""
        fields = [(b"host", target.host_header.encode("ascii"))]
        fields += [(name.encode("ascii"), value.encode("ascii")) for name, value in headers]
        # Every request states its length, an empty body too ("content-length: 0"), as
        # the gem's HTTP/1 client writes it; servers and signatures may see the difference.
        fields.append((b"content-length", str(len(content)).encode("ascii")))
        method_bytes = method_name.encode("ascii")
        data = encode_request(method_bytes, target.path.encode("ascii"), fields, content)
        head = _Head(data, method_name == "HEAD")
        return await self._request(target.origin, head, method_name in _IDEMPOTENT, timeouts)

    async def _request(
        self,
        origin: Origin,
        head: _Head,
        idempotent: bool,
        timeouts: Mapping[str, object],
    ) -> httpx.Response:
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
        conn = await self._connect(origin, _seconds(timeouts.get("connect")))
        return await self._exchange(conn, head, write_timeout, read_timeout, False)

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their response does."""
        self._closed = True
        pools, self._idle = self._idle, {}
        for stack in pools.values():
            for conn in stack:
                conn.close()
        await trio.lowlevel.checkpoint()

    # --- connections ------------------------------------------------------------------

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        stack = self._idle.get(origin)
        if not stack:
            return None
        now = trio.current_time()
        while stack:
            conn = stack.pop()
            if conn.reusable(now):
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        """Return a connection whose response was read to the end, or close it."""
        parser = conn.parser
        if self._closed or parser is None or not parser.reusable:
            conn.close()
            return
        now = trio.current_time()
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

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        delay = 0.0
        for attempt in range(self._retries + 1):
            try:
                return await self._open(origin, timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == self._retries:
                    raise
            await trio.sleep(delay)
            delay = 0.5 if delay == 0 else delay * 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open(self, origin: Origin, timeout: float) -> _Connection:
        scheme, host, port = origin
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            try:
                tcp = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
            if scheme != "https":
                return _Connection(origin, tcp, tcp)
            stream = trio.SSLStream(
                tcp, self._ssl_context, server_hostname=host, https_compatible=True
            )
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, OSError) as exc:
                tcp.socket.close()
                cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
                raise httpx.ConnectError(str(cause) or type(cause).__name__) from exc
            except BaseException:
                tcp.socket.close()
                raise
            return _Connection(origin, stream, tcp)
        raise httpx.ConnectTimeout(f"Timed out connecting to {host}:{port}")

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
        conn: _Connection,
        head: _Head,
        write_timeout: float,
        read_timeout: float,
        reused: bool,
    ) -> httpx.Response:
        """Write the request and read the response head on ``conn``.

        Raises :class:`_StaleConnection` (caused by the httpx error) if ``reused`` and the
        connection fails before any byte of the response arrived.
        """
        try:
            await _send_request(conn, head.data, write_timeout)
            parser = await _read_head(conn, read_timeout, head.head_only)
        except httpx.TransportError as exc:
            conn.close()
            if reused and not conn.received and not isinstance(exc, httpx.TimeoutException):
                raise _StaleConnection from exc
            raise
        except BaseException:
            conn.close()
            raise
        return httpx.Response(
            parser.status,
            headers=parser.headers,
            stream=_Body(self, conn, read_timeout),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": parser.reason,
            },
        )


class _Head:
    """A request ready to go: its bytes, and whether it is a HEAD (no response body)."""

    __slots__ = ("data", "head_only")

    def __init__(self, data: bytes, head_only: bool) -> None:
        self.data = data
        self.head_only = head_only


async def _send_request(conn: _Connection, data: bytes, timeout: float) -> None:
    deadline = _tighter_deadline(timeout)
    if deadline is None:  # the caller's deadline comes first: no scope of our own
        await _send_all(conn, data)
        return
    with trio.CancelScope(deadline=deadline):
        await _send_all(conn, data)
        return
    raise httpx.WriteTimeout("Timed out writing the request")


async def _send_all(conn: _Connection, data: bytes) -> None:
    if conn.plain:
        await _write_fd(conn, data)
        return
    try:
        await conn.stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise httpx.WriteError(str(exc.__cause__ or exc) or type(exc).__name__) from exc


async def _write_fd(conn: _Connection, data: bytes) -> None:
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


def _tighter_deadline(timeout: float) -> float | None:
    """The deadline ``timeout`` sets from now, or None when an enclosing one ends sooner.

    The worker wraps each request in its own overall deadline, and a per-read scope that
    could never fire is pure cost (a cancel scope per read was ~10 % of the CPU per job).
    """
    deadline = trio.current_time() + timeout
    return deadline if deadline < trio.current_effective_deadline() else None


async def _read_head(conn: _Connection, timeout: float, head_only: bool) -> ResponseParser:
    parser = conn.parser = ResponseParser(head_only=head_only)
    conn.received = False
    while not parser.head_done:
        chunk = await _receive(conn, timeout)
        if chunk:
            conn.received = True
            parser.feed(chunk)
        else:
            parser.feed_eof()
    return parser


class _StaleConnection(Exception):
    """A reused connection failed before the response began; its cause is the httpx error."""


async def _receive(conn: _Connection, timeout: float) -> bytes:
    """Read the next bytes from ``conn`` (b"" at EOF), as httpx errors."""
    deadline = _tighter_deadline(timeout)
    if deadline is None:
        return await _receive_some(conn)
    with trio.CancelScope(deadline=deadline):
        return await _receive_some(conn)
    raise httpx.ReadTimeout("Timed out reading the response")


async def _receive_some(conn: _Connection) -> bytes:
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


class _Body(httpx.AsyncByteStream):
    """The response body, chunk by chunk; closing it pools or closes the connection."""

    def __init__(self, transport: H11Transport, conn: _Connection, read_timeout: float) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self._read_timeout = read_timeout
        self._done = False
        self._pending: list[bytes] = []

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None or self._done:
            raise StopAsyncIteration
        try:
            chunk = await self._next_chunk(conn)
        except BaseException:
            self._discard()
            raise
        if chunk is None:
            self._done = True
            raise StopAsyncIteration
        return chunk

    async def _next_chunk(self, conn: _Connection) -> bytes | None:
        parser = conn.parser
        assert parser is not None
        pending = self._pending
        while True:
            if not pending:
                pending += parser.take_body()
            if pending:
                # several pieces parsed at once go out as one chunk (fewer iterations)
                chunk = pending[0] if len(pending) == 1 else b"".join(pending)
                pending.clear()
                return chunk
            if parser.complete:
                return None
            data = await _receive(conn, self._read_timeout)
            if data:
                parser.feed(data)
            else:
                parser.feed_eof()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._done:
                self._transport._release(conn)
            else:
                conn.close()


def _seconds(value: object) -> float:
    """A timeout from the request's extensions: None (or anything not a number) is no limit."""
    return float(value) if isinstance(value, int | float) else _INF
