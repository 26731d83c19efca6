"""H2Transport: HTTP/2 of our own, on h2 over trio (https in ``auto``/``http2``, and h2c).

httpcore's HTTP/2 let every stream of a connection wait on one read lock (~45 ms more per
request at moderate load), capped a connection at 100 streams, never opened a second
connection to an origin, and cost ~2 ms of CPU per job over TLS. This transport keeps
httpcore's behaviour where the gem's callbacks can see it (status, headers as received,
the exception classes and texts ``http/ruby_errors.py`` reads) and does the rest leaner:

* Connections per origin, each carrying up to the server's
  ``SETTINGS_MAX_CONCURRENT_STREAMS`` (followed when it changes; at most
  :data:`~patient_sidekiq.http.http2_connection.MAX_STREAMS_CAP` when it sets none). A
  request takes a slot on the first connection with one free; when all are full one request
  opens a new connection while the others wait for it (or for a slot) within their
  ``pool`` timeout. A new connection is used once the server's SETTINGS arrive (within the
  ``connect`` timeout), so the first burst never exceeds the server's limit.
* A connection with no stream is reused for :data:`KEEPALIVE_EXPIRY` seconds (as the
  HTTP/1.1 transport's keep-alive) and closed after, at most a second late. The reader task
  sees a server's close at once, so no liveness poll is needed.
* TLS offers ALPN ``h2`` and, in ``auto``, ``http/1.1``. When a server picks HTTP/1.1 (or no
  protocol) that handshake is dropped and the request goes to the HTTP/1.1 transport
  (``http1``), which opens its own connection; the origin is remembered as HTTP/1.1 for
  :data:`_HTTP1_MEMORY` seconds, then ALPN is asked again (a server may gain HTTP/2). One
  handshake per origin per period is the whole cost, and the HTTP/1.1 transport stays the
  only owner of HTTP/1.1 connections. With protocol ``http2`` the connection speaks HTTP/2
  whatever ALPN says, and ``http://`` is h2c with prior knowledge, as httpcore did.
* Retries: ``settings.retries`` extra connect attempts (0 s, 0.5 s, 1 s … apart, as
  httpcore's). A stream a GOAWAY refused (above its last stream id: never processed, so
  safe to send again whatever its method) is sent again on another connection, up to
  ``settings.retries`` times (at least once): the gem's async-http resends such requests
  up to its ``retries`` attempts, httpcore's pool without limit. A server that caps the
  requests per connection (nginx ``keepalive_requests``) refuses every stream sent past
  its cap, up to the stream limit of them at once. Refused every time, the request fails
  with RemoteProtocolError and the GOAWAY's text. The streams a graceful GOAWAY names
  finish (see ``http2_connection``). Such a cap is learnt from the graceful GOAWAY that
  refused streams: for :data:`_CAP_MEMORY` seconds the origin's next connections carry no
  more streams than it let through, and a new connection takes over instead of refusals.
* Request headers go out as httpcore sent them: ``:method``, ``:authority`` (the ``host``
  header), ``:scheme``, ``:path``, then the others in the caller's order (``http_client``
  puts ``content-length`` first), names lowercased, connection-specific headers dropped,
  ``authorization`` and short cookies never indexed by HPACK; a ``te`` other than
  ``trailers`` is httpx.LocalProtocolError, as h2 refused it.
* Timeouts from ``request.extensions["timeout"]``: ``connect`` (TCP, TLS, the server's
  SETTINGS: ConnectTimeout), ``pool`` (waiting for a slot: PoolTimeout), ``write``
  (waiting for the server's flow-control window: WriteTimeout), ``read`` (each wait for
  the response head or a piece of body: ReadTimeout); the caller applies the overall
  deadline.

Requests come as an ``httpx.Request`` (:meth:`H2Transport.handle_async_request`) or, on the
worker's hot path, as their parts (:meth:`H2Transport.send`: the same header block, without
building the ``httpx.Request``).

Connection tasks run in the nursery given (the worker's), else as trio system tasks. The
wire side of each connection is :mod:`~patient_sidekiq.http.http2_connection`. Touches no
Redis keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import httpx
import trio

from patient_sidekiq.http.connect import open_socket, with_retries
from patient_sidekiq.http.http1_transport import KEEPALIVE_EXPIRY
from patient_sidekiq.http.http2_connection import Connection
from patient_sidekiq.http.http2_headers import header_block, request_headers
from patient_sidekiq.http.http2_stream import Refused, Stream
from patient_sidekiq.http.http2_wire import Wire
from patient_sidekiq.http.settings import HttpSettings, ssl_context_for
from patient_sidekiq.http.targets import DEFAULT_PORTS, DirectTarget, Origin

__all__ = ["KEEPALIVE_EXPIRY", "H2Transport"]

_HTTP1_MEMORY: Final = 300.0
_CAP_MEMORY: Final = 300.0
_SWEEP_INTERVAL: Final = 1.0
_INF: Final = float("inf")


class _Pool:
    """The connections to one origin and the requests waiting for one."""

    __slots__ = (
        "cap", "cap_until", "changed", "connections", "draining", "failures", "http1_until",
        "opening",
    )  # fmt: skip

    def __init__(self) -> None:
        self.connections: list[Connection] = []  # those that may take new streams
        self.draining: set[Connection] = set()  # no new stream, some still running
        self.opening = 0  # connections being opened
        self.failures = 0  # connects that failed (waiters then open their own)
        self.http1_until = 0.0  # ALPN picked HTTP/1.1: go there directly until then
        self.changed: trio.Event | None = None  # set when capacity may have appeared
        self.cap = 0  # the streams a server lets a connection carry, learnt from a GOAWAY
        self.cap_until = 0.0

    def pick(self, now: float) -> Connection | None:
        for conn in self.connections:
            if (
                conn.usable
                and conn.active < conn.max_streams
                and (conn.active or now - conn.idle_since <= KEEPALIVE_EXPIRY)
            ):
                return conn
        return None

    def on_change(self, conn: Connection) -> None:
        if not conn.usable:
            if conn in self.connections:
                self.connections.remove(conn)
                if conn.server_cap:
                    self.cap = conn.server_cap
                    self.cap_until = trio.current_time() + _CAP_MEMORY
            if conn.failure is None:
                self.draining.add(conn)
            else:
                self.draining.discard(conn)
        self.notify()

    def notify(self) -> None:
        event = self.changed
        if event is not None:
            self.changed = None
            event.set()

    async def wait(self, deadline: float) -> bool:
        """Wait for a change until ``deadline``; False when it passed."""
        event = self.changed
        if event is None:
            event = self.changed = trio.Event()
        with trio.move_on_at(deadline):
            await event.wait()
            return True
        return False


class H2Transport(httpx.AsyncBaseTransport):
    """HTTP/2 over h2 and trio, connections multiplexed per origin (see module doc)."""

    def __init__(
        self,
        settings: HttpSettings,
        *,
        http1: httpx.AsyncBaseTransport | None = None,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self._negotiate = settings.protocol != "http2" and http1 is not None
        self._http1 = http1
        self._ssl_context = ssl_context_for(settings)
        self._ssl_context.set_alpn_protocols(["h2", "http/1.1"] if self._negotiate else ["h2"])
        self._nursery = nursery
        self._retries = max(0, settings.retries)
        self._resends = max(1, settings.retries)  # of a stream a GOAWAY refused
        self._pools: dict[Origin, _Pool] = {}
        self._next_sweep = 0.0

    def connections(self) -> int:
        """How many connections the pools hold (for tests and diagnostics)."""
        return sum(len(pool.connections) for pool in self._pools.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a stream; return once its headers are in (the body streams)."""
        url = request.url
        scheme = url.scheme
        default_port = DEFAULT_PORTS.get(scheme)
        if default_port is None:
            raise httpx.UnsupportedProtocol(f"Unsupported URL protocol {scheme!r}")
        origin = (scheme, url.host, url.port or default_port)
        headers, end_stream = request_headers(request)
        body = b"" if end_stream else request.content
        timeouts = request.extensions.get("timeout") or {}
        return await self._send(origin, headers, end_stream, body, timeouts, lambda: request)

    async def send(
        self,
        target: DirectTarget,
        method: str,
        fields: list[tuple[bytes, bytes]],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
        http1_request: Callable[[], httpx.Request],
    ) -> httpx.Response:
        """Send a request without an ``httpx.Request`` (the worker's hot path; building one
        cost ~9 % of the CPU per job): the same header block and stream as
        :meth:`handle_async_request` for the same request. ``fields`` are the headers as
        httpx would have been given them, ``host`` included; ``http1_request`` makes the
        ``httpx.Request`` only when the origin turns out to speak HTTP/1.1 (ALPN)."""
        headers, end_stream = header_block(
            method.upper().encode("ascii"),
            target.origin[0],
            target.host_header.encode("ascii"),
            target.path.encode("ascii"),
            fields,
        )
        content = b"" if end_stream or body is None else body
        return await self._send(
            target.origin, headers, end_stream, content, timeouts, http1_request
        )

    async def _send(
        self,
        origin: Origin,
        headers: list[tuple[bytes, bytes]],
        end_stream: bool,
        body: bytes,
        timeouts: Mapping[str, object],
        http1_request: Callable[[], httpx.Request],
    ) -> httpx.Response:
        attempts = self._resends
        while True:
            conn = await self._acquire(origin, timeouts)
            if conn is None:
                assert self._http1 is not None
                return await self._http1.handle_async_request(http1_request())
            try:
                return await _exchange(conn, headers, end_stream, body, timeouts)
            except Refused as refused:
                if not attempts:
                    raise httpx.RemoteProtocolError(str(refused)) from None
                attempts -= 1

    async def aclose(self) -> None:
        """Close every connection; requests still on them fail with ReadError."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            for conn in [*pool.connections, *pool.draining]:
                conn.close()
        await trio.lowlevel.checkpoint()

    # --- connections ------------------------------------------------------------------

    async def _acquire(self, origin: Origin, timeouts: Mapping[str, object]) -> Connection | None:
        """A connection with a slot taken for the caller; None: send it over HTTP/1.1."""
        now = trio.current_time()
        if now >= self._next_sweep:
            self._sweep(now)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool()
        conn = pool.pick(now)
        if conn is not None:
            conn.take()
            return conn
        if pool.http1_until > now:
            return None
        deadline = now + _seconds(timeouts.get("pool"))
        failures = pool.failures
        while pool.opening and pool.failures == failures:
            if not await pool.wait(deadline):
                raise httpx.PoolTimeout("Timed out waiting for a connection")
            now = trio.current_time()
            conn = pool.pick(now)
            if conn is not None:
                conn.take()
                return conn
            if pool.http1_until > now:
                return None
        return await self._open(pool, origin, _seconds(timeouts.get("connect")))

    async def _open(self, pool: _Pool, origin: Origin, timeout: float) -> Connection | None:
        now = trio.current_time()
        for conn in list(pool.connections):  # replaced now rather than at the next sweep
            if not conn.active and now - conn.idle_since > KEEPALIVE_EXPIRY:
                conn.close()
        pool.opening += 1
        try:
            wire, alpn = await self._connect(origin, timeout)
            if self._negotiate and origin[0] == "https" and alpn != "h2":
                wire.close()
                pool.http1_until = trio.current_time() + _HTTP1_MEMORY
                return None
            conn = Connection(origin, wire, pool.on_change)
            if pool.cap_until > trio.current_time():
                conn.budget = pool.cap
            pool.connections.append(conn)
            conn.take()  # the caller's slot
            conn.start(self._spawn)
            try:
                await _settings_of(conn, timeout)
            except BaseException:  # failed, timed out or cancelled: the slot is not ours
                conn.release_slot()
                raise
        except BaseException:
            pool.failures += 1
            raise
        finally:
            pool.opening -= 1
            pool.notify()
        return conn

    def _spawn(self, task: Callable[[], Any]) -> None:
        nursery = self._nursery
        if nursery is not None:
            try:
                nursery.start_soon(task)
            except RuntimeError:  # the nursery is closing: fall back to the system nursery
                pass
            else:
                return
        trio.lowlevel.spawn_system_task(task)

    def _sweep(self, now: float) -> None:
        """Close connections idle past the keep-alive expiry; forget pools with nothing left."""
        self._next_sweep = now + _SWEEP_INTERVAL
        empty: list[Origin] = []
        for origin, pool in self._pools.items():
            for conn in list(pool.connections):
                if not conn.active and now - conn.idle_since > KEEPALIVE_EXPIRY:
                    conn.close()
            if (
                not pool.connections
                and not pool.draining
                and not pool.opening
                and max(pool.http1_until, pool.cap_until) <= now
            ):
                empty.append(origin)
        for origin in empty:
            if self._pools[origin].changed is None:
                del self._pools[origin]

    async def _connect(self, origin: Origin, timeout: float) -> tuple[Wire, str | None]:
        return await with_retries(lambda: self._connect_once(origin, timeout), self._retries)

    async def _connect_once(self, origin: Origin, timeout: float) -> tuple[Wire, str | None]:
        _, host, port = origin
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            tcp, session = await open_socket(origin, self._ssl_context)
            alpn = session.tls.selected_alpn_protocol() if session is not None else None
            return Wire(tcp, session), alpn
        raise httpx.ConnectTimeout(f"Timed out connecting to {host}:{port}")


async def _settings_of(conn: Connection, timeout: float) -> None:
    """Wait for the server's first SETTINGS (its stream limit) on a new connection."""
    with trio.move_on_after(timeout):
        await conn.ready.wait()
    if conn.failure is not None:
        raise conn.failure.exception()
    if not conn.ready.is_set():
        conn.close()
        raise httpx.ConnectTimeout("Timed out waiting for the server's HTTP/2 settings")


async def _exchange(
    conn: Connection,
    headers: list[tuple[bytes, bytes]],
    end_stream: bool,
    body: bytes,
    timeouts: Mapping[str, object],
) -> httpx.Response:
    """One request on ``conn``, whose slot the caller holds; the response once its head is in."""
    read_timeout = _seconds(timeouts.get("read"))
    try:
        stream = conn.open_stream(headers, end_stream)
    except BaseException:
        conn.release_slot()
        raise
    try:
        if not end_stream:
            await conn.send_body(stream, body, _seconds(timeouts.get("write")))
        status, response_headers = await conn.response_head(stream, read_timeout)
    except BaseException:
        conn.release(stream)
        raise
    return httpx.Response(
        status,
        headers=response_headers,
        stream=_Body(conn, stream, read_timeout),
        extensions={"http_version": b"HTTP/2", "stream_id": stream.id},
    )


class _Body(httpx.AsyncByteStream):
    """The response body, piece by piece; closing it releases the stream's slot."""

    __slots__ = ("_conn", "_read_timeout", "_stream")

    def __init__(self, conn: Connection, stream: Stream, read_timeout: float) -> None:
        self._conn = conn
        self._stream = stream
        self._read_timeout = read_timeout

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._conn.next_chunk(self._stream, self._read_timeout)
        except BaseException:
            self._conn.release(self._stream)
            raise
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._conn.release(self._stream)


def _seconds(value: object) -> float:
    """A timeout from the request's extensions: None (or anything not a number) is no limit."""
    return float(value) if isinstance(value, int | float) else _INF
