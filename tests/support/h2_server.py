"""A small scriptable HTTP/2 server (h2 over trio) for what hypercorn will not do on demand.

The HTTP/2 transport's edge cases need a server that resets a stream, sends GOAWAY
(graceful or with an error, or refusing streams it never processed), drops the connection
in the middle of a body, advertises a chosen ``SETTINGS_MAX_CONCURRENT_STREAMS`` and
counts its connections and open streams. It serves TLS (ALPN ``h2``) with the session's
test certificate, or h2c with prior knowledge.

Paths: ``/echo`` (JSON: method, path, headers, body length and SHA-256), ``/big?bytes=``
(that many ``x``, honouring the client's flow-control windows), ``/hold`` (answers once
``hold`` streams are open at the same time), ``/slow?seconds=``, ``/reset`` (RST_STREAM
before the response), ``/reset-mid-body``, ``/drop-mid-body`` (FIN after part of a body),
``/abort-mid-body`` (TCP RST after part of a body), ``/goaway-error`` (GOAWAY
INTERNAL_ERROR, then close), ``/goaway-graceful`` (GOAWAY NO_ERROR naming this stream,
then the response, then close). ``refuse_connections=n``: each of the first n connections
answers its first request with GOAWAY NO_ERROR, last stream 0 (never processed), and closes.
``max_requests=n``: as nginx's ``keepalive_requests``, the n-th request of a connection
brings a GOAWAY NO_ERROR naming it; later streams are never answered.

:func:`start_http1_only_tls` is hypercorn with the usual test app over TLS offering ALPN
``http/1.1`` alone: a server that ``auto`` must reach over HTTP/1.1.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import struct
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hyperframe.frame import GoAwayFrame

from tests.support.http import Server, TlsCerts, app


@dataclass
class H2ServerState:
    """What the server saw; tests read it."""

    hold: int = 0
    refuse_connections: int = 0
    max_requests: int = 0
    connections: int = 0
    answered: int = 0
    open_streams: int = 0
    peak_streams: int = 0
    holding: int = 0
    released: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)

    def streams_changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_open_streams(self, count: int) -> None:
        """Return once ``count`` requests are being answered at the same time."""
        while self.open_streams != count:
            await self.changed.wait()


@dataclass(frozen=True)
class RawH2Server:
    """A running server: ``url("/echo")``."""

    scheme: str
    port: int
    state: H2ServerState

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


class _Connection:
    def __init__(
        self, stream: trio.abc.Stream, tcp: trio.SocketStream, state: H2ServerState, number: int
    ) -> None:
        self.stream = stream
        self.tcp = tcp
        self.state = state
        self.number = number
        self.h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.send_lock = trio.Lock()
        self.window_opened = trio.Event()
        self.requests: dict[int, tuple[list[tuple[bytes, bytes]], bytearray]] = {}
        self.first_request = True
        self.received = 0
        self.last_stream = 0  # set by our GOAWAY: streams above it are ignored

    async def flush(self) -> None:
        async with self.send_lock:
            data = self.h2.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def write_raw(self, data: bytes) -> None:
        await self.flush()
        async with self.send_lock:
            await self.stream.send_all(data)

    async def respond(
        self, stream_id: int, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        head = [(b":status", str(status).encode()), *headers]
        self.h2.send_headers(stream_id, head, end_stream=not body)
        await self.flush()
        if body:
            await self.send_body(stream_id, body, end=True)

    async def send_body(self, stream_id: int, body: bytes, *, end: bool) -> None:
        view = memoryview(body)
        while view:
            window = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                await self.window_opened.wait()
                continue
            piece, view = view[:window], view[window:]
            self.h2.send_data(stream_id, bytes(piece), end_stream=end and not view)
            await self.flush()

    def finish(self) -> bool:
        """Send FIN and read on until the client closes: closing with unread bytes in the
        socket's buffer would send RST instead."""
        self.tcp.socket.shutdown(socket.SHUT_WR)
        return False

    def abort(self) -> None:
        # SO_LINGER 0: the close() as the connection ends sends RST instead of FIN
        self.tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _handle(conn: _Connection, stream_id: int, nursery: trio.Nursery) -> None:
    headers, body = conn.requests.pop(stream_id)
    state = conn.state
    state.answered += 1
    state.open_streams += 1
    state.peak_streams = max(state.peak_streams, state.open_streams)
    state.streams_changed()
    try:
        if await _answer(conn, stream_id, headers, bytes(body)):
            nursery.cancel_scope.cancel()  # the connection ends here (RST)
    except h2.exceptions.StreamClosedError:
        pass  # the client reset the stream (it stopped reading): the connection goes on
    finally:
        state.open_streams -= 1
        state.streams_changed()


async def _answer(
    conn: _Connection, stream_id: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> bool:
    """Answer one request; True when the connection must be reset after it."""
    fields = dict(headers)
    parts = urlsplit(fields[b":path"].decode())
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    state = conn.state
    first, conn.first_request = conn.first_request, False
    if first and conn.number <= state.refuse_connections:
        await conn.write_raw(_goaway(0, 0))
        return conn.finish()
    path = parts.path
    if path == "/echo":
        echo = {
            "method": fields[b":method"].decode(),
            "path": fields[b":path"].decode(),
            "headers": [[k.decode(), v.decode("latin-1")] for k, v in headers],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "connection": conn.number,
        }
        data = json.dumps(echo).encode()
        await conn.respond(stream_id, 200, data, [(b"content-type", b"application/json")])
    elif path == "/big":
        await conn.respond(stream_id, 200, b"x" * int(query.get("bytes", "0")), [])
    elif path == "/hold":
        state.holding += 1
        if state.holding >= state.hold:
            state.released.set()
        await state.released.wait()
        await conn.respond(stream_id, 200, f"held {conn.number}".encode(), [])
    elif path == "/slow":
        await trio.sleep(float(query.get("seconds", "1")))
        await conn.respond(stream_id, 200, b"slow", [])
    elif path == "/reset":
        conn.h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        await conn.flush()
    elif path in ("/reset-mid-body", "/drop-mid-body", "/abort-mid-body"):
        conn.h2.send_headers(stream_id, [(b":status", b"200"), (b"content-length", b"1000")])
        await conn.send_body(stream_id, b"partial", end=False)
        if path == "/reset-mid-body":
            conn.h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            await conn.flush()
            return False
        if path == "/drop-mid-body":
            return conn.finish()
        conn.abort()
        return True
    elif path == "/goaway-error":
        await conn.write_raw(_goaway(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR))
        return conn.finish()
    elif path == "/goaway-graceful":
        # h2 refuses to send once it has sent GOAWAY (python-hyper/h2#1181), so the frame
        # goes out behind its back and the stream is finished as the RFC allows.
        await conn.write_raw(_goaway(stream_id, 0))
        await conn.respond(stream_id, 200, b"finished", [])
        return conn.finish()
    else:
        await conn.respond(stream_id, 404, b"not found", [])
    return False


def _goaway(last_stream_id: int, error_code: int) -> bytes:
    frame = GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = error_code
    return bytes(frame.serialize())


async def _serve(
    state: H2ServerState,
    settings: dict[h2.settings.SettingCodes, int],
    context: ssl.SSLContext | None,
    tcp: trio.SocketStream,
) -> None:
    stream: trio.abc.Stream = tcp
    try:
        if context is not None:
            stream = trio.SSLStream(tcp, context, server_side=True)
            await stream.do_handshake()
        state.connections += 1
        conn = _Connection(stream, tcp, state, state.connections)
        conn.h2.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        conn.h2.initiate_connection()
        await conn.flush()
        async with trio.open_nursery() as nursery:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                for event in conn.h2.receive_data(data):
                    _dispatch(conn, event, nursery)
                await conn.flush()
            nursery.cancel_scope.cancel()
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h2.exceptions.H2Error):
        pass
    finally:
        tcp.socket.close()


def _dispatch(conn: _Connection, event: h2.events.Event, nursery: trio.Nursery) -> None:
    if isinstance(event, h2.events.RequestReceived):
        assert event.stream_id is not None
        assert event.headers is not None
        conn.received += 1
        if conn.received == conn.state.max_requests:
            conn.last_stream = event.stream_id
            nursery.start_soon(conn.write_raw, _goaway(event.stream_id, 0))
        conn.requests[event.stream_id] = (
            [(bytes(k), bytes(v)) for k, v in event.headers],
            bytearray(),
        )
    elif isinstance(event, h2.events.DataReceived):
        assert event.stream_id is not None
        assert event.data is not None
        conn.requests[event.stream_id][1].extend(event.data)
        conn.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
    elif isinstance(event, h2.events.StreamEnded):
        assert event.stream_id is not None
        if not conn.last_stream or event.stream_id <= conn.last_stream:
            nursery.start_soon(_handle, conn, event.stream_id, nursery)
    elif isinstance(
        event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged | h2.events.StreamReset
    ):
        conn.window_opened.set()
        conn.window_opened = trio.Event()


async def start_raw_h2(
    nursery: trio.Nursery,
    certs: TlsCerts | None = None,
    *,
    max_concurrent_streams: int = 100,
    initial_window: int = 65535,
    hold: int = 0,
    refuse_connections: int = 0,
    max_requests: int = 0,
) -> RawH2Server:
    """Start the server in ``nursery`` on a free port; it stops when the nursery is cancelled."""
    context = None
    if certs is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs.cert_file, certs.key_file)
        context.set_alpn_protocols(["h2"])
    state = H2ServerState(
        hold=hold, refuse_connections=refuse_connections, max_requests=max_requests
    )
    settings = {
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window,
    }
    handler = partial(_serve, state, settings, context)
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = int(listeners[0].socket.getsockname()[1])
    return RawH2Server("https" if certs is not None else "http", port, state)


async def start_http1_only_tls(nursery: trio.Nursery, certs: TlsCerts) -> Server:
    """hypercorn over TLS whose ALPN offers ``http/1.1`` only."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.certfile = str(certs.cert_file)
    config.keyfile = str(certs.key_file)
    config.alpn_protocols = ["http/1.1"]
    binds = await nursery.start(partial(serve, cast(Any, app), config, mode="asgi"))
    return Server("https", int(binds[0].rsplit(":", 1)[1]))
