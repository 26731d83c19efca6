"""One HTTP/2 connection of :mod:`~patient_sidekiq.http.http2_transport`: h2's state machine,
one reader task and one writer task.

Why tasks of its own: httpcore lets whichever request needs bytes read for every stream
under one lock, so a stream waits on its neighbours' reads (~45 ms per request at moderate
load). Here one reader per connection feeds the socket's bytes to h2 and hands each stream
its events, waking only the request that waits on that stream; a request never holds a lock
across an await. One writer per connection sends what h2 has queued: the frames several
requests queue in one scheduler pass go out in one TLS record, and a request cancelled by
its deadline can never leave the TLS stream half-written for the others. The bytes move
through :class:`~patient_sidekiq.http.http2_wire.Wire` (TLS on the socket's descriptor).

* Flow control: we advertise :data:`STREAM_WINDOW` per stream and :data:`CONNECTION_WINDOW`
  for the connection, so a response of the worker's default size limit (1 MiB) never waits
  for a WINDOW_UPDATE; what a request has read is given back every :data:`_ACK_EVERY` bytes
  (h2 then sends the update when half a window is used), and what it never read when its
  stream is released. Request bodies wait for the server's windows.
* Failures reach each waiting request as a fresh httpx exception of the class httpcore
  raised for the same event, chained to its cause (``http/ruby_errors.py`` reads the
  chain): a stream reset is RemoteProtocolError with h2's event text, EOF is
  RemoteProtocolError "Server disconnected" (or the GOAWAY's text once one came), a socket
  error ReadError / WriteError from the trio error.
* GOAWAY: streams above its last stream id were never processed and fail with
  :class:`Refused` (the transport sends them once more on another connection). With an
  error code every other open stream fails too; a graceful one (NO_ERROR, as nginx sends
  after ``keepalive_requests``) lets the streams it names finish, as the RFC and the gem's
  protocol-http2 do, which needs h2's state machine reopened: h2 refuses every frame after
  a GOAWAY (python-hyper/h2#1181). The connection takes no new stream either way.

Touches no Redis keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx
import trio

from patient_sidekiq.http.http2_headers import CachingDecoder, PlainEncoder
from patient_sidekiq.http.http2_state import H2State, StaysOpenAfterGoaway
from patient_sidekiq.http.http2_stream import Failure, Stream
from patient_sidekiq.http.http2_wire import Wire
from patient_sidekiq.http.targets import Origin

__all__ = ["CONNECTION_WINDOW", "MAX_STREAMS_CAP", "STREAM_WINDOW", "Connection", "response_fields"]

STREAM_WINDOW: Final = 2 * 1024 * 1024
CONNECTION_WINDOW: Final = 16 * 1024 * 1024
MAX_STREAMS_CAP: Final = 1000  # when the server sets no SETTINGS_MAX_CONCURRENT_STREAMS
_ACK_EVERY: Final = 256 * 1024
_FORGET_EVERY: Final = 64  # released streams between two clean-ups of h2's closed ones
_STREAM_IDS: Final = 2**30 - MAX_STREAMS_CAP  # odd ids below 2**31, less a margin
# Headers are normalised by the transport (h2's own pass costs CPU and, failing half-way,
# would leave the HPACK encoder out of step with the server's decoder).
_CONFIG: Final = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,  # response_fields joins cookie fields itself
)
_MAX_HEADER_LIST: Final = 65536
_SETTINGS: Final = {
    h2.settings.SettingCodes.ENABLE_PUSH: 0,
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST,
    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
    h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0,  # see http2_headers.CachingDecoder
}
_IO_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Connection:
    """One HTTP/2 connection to an origin; ``on_change`` is told whenever its capacity or
    usability changes (a stream released, new settings, GOAWAY, failure)."""

    def __init__(
        self,
        origin: Origin,
        wire: Wire,
        on_change: Callable[[Connection], None],
    ) -> None:
        self.origin = origin
        self.h2 = H2State(config=_CONFIG)
        self.h2.state_machine = StaysOpenAfterGoaway()
        self.h2.encoder = PlainEncoder()  # type: ignore[assignment]
        self.h2.decoder = CachingDecoder()
        self.h2.decoder.max_header_list_size = _MAX_HEADER_LIST
        self._released = 0
        self.streams: dict[int, Stream] = {}
        self.active = 0  # slots taken: streams opened (or about to be) and not yet released
        self.max_streams = 1  # until the server's SETTINGS arrive
        self.usable = True  # may take new streams
        self.failure: Failure | None = None
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.taken = 0  # slots ever taken
        self.budget = _STREAM_IDS  # streams it may carry in all
        self.server_cap = 0  # streams a graceful GOAWAY let through when it refused others
        self.ready = trio.Event()  # the server's SETTINGS arrived, or the connection failed
        self.idle_since = trio.current_time()
        self._wire = wire
        self._on_change = on_change
        self._out: list[bytes] = []
        self._writer: trio.lowlevel.Task | None = None
        self._blocked: list[Stream] = []  # streams waiting for a send window

    def start(self, spawn: Callable[[Callable[[], Any]], None]) -> None:
        """Queue the connection preface and start the reader and writer tasks."""
        h = self.h2
        h.local_settings = h2.settings.Settings(client=True, initial_values=dict(_SETTINGS))
        # Some servers balk at this setting in the preface, unknown to the original RFC.
        del h.local_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
        h.initiate_connection()
        h.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()
        spawn(self._read_loop)
        spawn(self._write_loop)

    # --- used by the requests ---------------------------------------------------------

    def take(self) -> None:
        """Take a slot for a stream about to open."""
        self.active += 1
        self.taken += 1
        if self.taken >= self.budget:
            self.usable = False  # closes once its streams are done
            self._on_change(self)

    def open_stream(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> Stream:
        """Send a request's headers on a new stream (its slot is already taken)."""
        h = self.h2
        stream_id = h.get_next_available_stream_id()
        stream = Stream(stream_id)
        self.streams[stream_id] = stream
        h.send_request_headers(stream_id, headers, end_stream)
        stream.sent = end_stream
        self.flush()
        return stream

    async def send_body(self, stream: Stream, body: bytes, timeout: float) -> None:
        """Send the request body as the server's flow-control windows allow, then END_STREAM."""
        h = self.h2
        total = len(body)
        offset = 0
        while True:
            if stream.failure is not None:
                raise stream.failure.exception()
            try:
                window = min(h.local_flow_control_window(stream.id), h.max_outbound_frame_size)
                if window <= 0 and total:
                    self.flush()  # what fitted goes out: the server's update answers it
                    self._blocked.append(stream)
                    await stream.wait(timeout, httpx.WriteTimeout)
                    continue
                end = min(total, offset + window)
                h.send_data(stream.id, body[offset:end], end_stream=end == total)
            except h2.exceptions.StreamClosedError as exc:
                if stream.ended:  # answered and closed before it read the whole body
                    return
                raise httpx.RemoteProtocolError(str(exc) or "stream closed") from exc
            offset = end
            if end == total:
                stream.sent = True
                self.flush()
                return

    async def response_head(
        self, stream: Stream, timeout: float
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Wait for the response headers: the status and the other headers as received."""
        while stream.headers is None:
            if stream.failure is not None:
                raise stream.failure.exception()
            await stream.wait(timeout, httpx.ReadTimeout)
        return response_fields(stream.headers)

    async def next_chunk(self, stream: Stream, timeout: float) -> bytes | None:
        """The next piece of the response body; None once it ended."""
        while True:
            chunks = stream.chunks
            if chunks:
                chunk = chunks.popleft()
                stream.consumed += len(chunk)
                if stream.consumed >= _ACK_EVERY:
                    self._acknowledge(stream, stream.consumed)
                return chunk
            if stream.ended:
                return None
            if stream.failure is not None:
                raise stream.failure.exception()
            await stream.wait(timeout, httpx.ReadTimeout)

    def release(self, stream: Stream) -> None:
        """The request is done with ``stream`` (read to the end or not): free its slot."""
        if self.streams.pop(stream.id, None) is None:
            return
        self._released += 1
        if not self._released % _FORGET_EVERY:
            self.h2.forget_closed()
        if self.failure is None:
            h = self.h2
            if not (stream.ended and stream.sent) and stream.failure is None:
                # given up half-way: the server may stop working on it
                with contextlib.suppress(h2.exceptions.H2Error):  # closed on h2's side
                    h.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
            if stream.unacked:
                self._acknowledge(stream, stream.unacked)
            self.flush()
        self.release_slot()

    def release_slot(self) -> None:
        """Give back a slot taken for a stream that never opened, or whose stream ended."""
        self.active -= 1
        if not self.active:
            self.idle_since = trio.current_time()
            if not self.usable:
                self.close()
                return
        self._on_change(self)

    def close(self) -> None:
        """Close at once; requests still on it fail with ReadError."""
        self._fail(Failure(httpx.ReadError, "connection closed"))

    def flush(self) -> None:
        """Hand what h2 has queued to the writer task."""
        data = self.h2.data_to_send()
        if data:
            self._out.append(data)
            self._wake_writer()

    def _wake_writer(self) -> None:
        task = self._writer
        if task is not None:
            self._writer = None
            trio.lowlevel.reschedule(task)

    def _acknowledge(self, stream: Stream, amount: int) -> None:
        stream.unacked -= amount
        stream.consumed = 0
        self.h2.acknowledge_received_data(amount, stream.id)
        self.flush()

    # --- the reader and the writer ----------------------------------------------------

    async def _read_loop(self) -> None:
        receive = self._wire.receive
        h = self.h2
        try:
            while True:
                data = await receive()
                if not data:
                    goaway = self.goaway
                    text = str(goaway) if goaway is not None else "Server disconnected"
                    self._fail(Failure(httpx.RemoteProtocolError, text))
                    return
                for event in h.receive_data(data):
                    self._dispatch(event)
                self.flush()
                if self._wire.has_output():  # the TLS layer answers something: the writer sends it
                    self._wake_writer()
        except _IO_ERRORS as exc:
            self._fail(Failure(httpx.ReadError, _text(exc), exc))
        except h2.exceptions.ProtocolError as exc:
            self._fail(Failure(httpx.RemoteProtocolError, str(exc), exc))
        except Exception as exc:  # never let a bug here end the program (a system task)
            self._fail(Failure(httpx.RemoteProtocolError, _text(exc), exc))
        finally:
            self._fail(Failure(httpx.ReadError, "connection closed"))

    def _dispatch(self, event: h2.events.Event) -> None:
        kind = type(event)
        if kind is h2.events.DataReceived:
            assert isinstance(event, h2.events.DataReceived)
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                data = event.data or b""
                length = event.flow_controlled_length or 0
                stream.chunks.append(data)
                stream.unacked += length
                stream.consumed += length - len(data)  # padding: nobody will read it
                stream.wake()
        elif kind is h2.events.ResponseReceived:
            assert isinstance(event, h2.events.ResponseReceived)
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.headers = event.headers or []  # h2's own list, made for this event
                stream.wake()
        elif kind is h2.events.StreamEnded:
            stream = self.streams.get(event.stream_id or 0)  # type: ignore[attr-defined]
            if stream is not None:
                stream.ended = True
                stream.wake()
        elif kind is h2.events.StreamReset:
            stream = self.streams.get(event.stream_id or 0)  # type: ignore[attr-defined]
            if stream is not None and not stream.ended:
                stream.failure = Failure(httpx.RemoteProtocolError, str(event))
                stream.wake()
        elif kind is h2.events.WindowUpdated:
            self._unblock()
        elif kind is h2.events.RemoteSettingsChanged:
            limit = self.h2.remote_settings.max_concurrent_streams
            self.max_streams = min(limit, MAX_STREAMS_CAP)
            self.ready.set()
            self._unblock()
            self._on_change(self)
        elif kind is h2.events.ConnectionTerminated:
            assert isinstance(event, h2.events.ConnectionTerminated)
            self._goaway(event)

    def _unblock(self) -> None:
        blocked = self._blocked
        if blocked:
            self._blocked = []
            for stream in blocked:
                stream.wake()

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.usable = False
        self.goaway = event
        last = event.last_stream_id or 0
        failure = Failure(httpx.RemoteProtocolError, str(event))
        refused = Failure(httpx.RemoteProtocolError, str(event))
        refused.refused = True
        graceful = event.error_code == h2.errors.ErrorCodes.NO_ERROR
        for stream_id, stream in self.streams.items():
            if stream.ended or stream.failure is not None:
                continue
            if stream_id > last:
                stream.failure = refused
                stream.wake()
                if graceful and last:
                    self.server_cap = (last + 1) // 2  # ours are the odd ids
            elif not graceful:
                stream.failure = failure
                stream.wake()
        if not graceful or not self.active:
            self._fail(failure)
            return
        self._on_change(self)  # closes once its last stream is released

    async def _write_loop(self) -> None:
        wire = self._wire
        try:
            while self.failure is None:
                out = self._out
                if out:
                    self._out = []
                    await wire.send(out[0] if len(out) == 1 else b"".join(out))
                elif wire.has_output():
                    await wire.send(b"")
                else:
                    self._writer = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._abort_writer)
        except _IO_ERRORS as exc:
            self._fail(Failure(httpx.WriteError, _text(exc), exc))
        except Exception as exc:  # never let a bug here end the program (a system task)
            self._fail(Failure(httpx.WriteError, _text(exc), exc))
        finally:
            self._fail(Failure(httpx.WriteError, "connection closed"))

    def _abort_writer(self, _: Any) -> trio.lowlevel.Abort:
        self._writer = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _fail(self, failure: Failure) -> None:
        """The connection is done: every open stream fails with ``failure``, the socket closes."""
        if self.failure is not None:
            return
        self.failure = failure
        self.usable = False
        for stream in self.streams.values():
            if not stream.ended and stream.failure is None:
                stream.failure = failure
            stream.wake()
        self._blocked = []
        self.ready.set()
        self._wire.close()
        self._wake_writer()
        self._on_change(self)


def response_fields(
    fields: list[tuple[bytes, bytes]],
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status and the other fields of a response's header block, ``cookie`` fields
    joined into one at the end as h2's inbound normalisation did (RFC 9113 §8.2.3), which
    is off in :data:`_CONFIG`: its pass over every field cost more than this one."""
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    for name, value in fields:
        if name[:1] != b":":
            if name == b"cookie":
                cookies.append(value)
            else:
                headers.append((name, value))
        elif name == b":status":
            status = int(value.decode("ascii", "ignore"))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    return status, headers


def _text(exc: BaseException) -> str:
    return str(exc.__cause__ or exc) or type(exc).__name__
