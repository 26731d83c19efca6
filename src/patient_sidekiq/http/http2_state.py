"""h2's connection state, trimmed where :mod:`~patient_sidekiq.http.http2_connection` does the
work itself (or must not have h2 do it).

* A GOAWAY does not close h2's state (:class:`StaysOpenAfterGoaway`), so the streams a
  graceful one names can finish.
* h2 does not count open streams on every new stream (:class:`H2State`): the connection
  keeps the server's limit itself.
* A request's HEADERS go out without h2's per-stream ``send_headers`` machinery
  (:meth:`H2State.send_request_headers`): the same state changes and the same bytes, for the
  header block :func:`~patient_sidekiq.http.http2_headers.header_block` already checked.
* The frames every response brings (HEADERS, DATA on a stream that is receiving) are read
  without h2's frame objects (:meth:`H2State.receive_data`): the same calls into h2's
  connection and stream state as h2's own handlers make; every other frame goes through h2.

These reach into h2's internals (h2 4.x); ``tests/http/test_http2_state.py`` pins each
against what h2 itself does. Touches no Redis keys.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

import h2.connection
import h2.events
import h2.exceptions
import h2.stream
from h2.connection import AllowedStreamIDs, ConnectionInputs
from h2.stream import StreamInputs, StreamState
from hyperframe.frame import WindowUpdateFrame

__all__ = ["H2State", "StaysOpenAfterGoaway"]

_Handler = Callable[[h2.stream.H2Stream, bytes, bool], list[h2.events.Event]]

_DATA: Final = 0x0
_HEADERS: Final = 0x1
_CONTINUATION: Final = 0x9
_END_STREAM: Final = 0x1
_END_HEADERS: Final = 0x4
_PADDED: Final = 0x8
_PRIORITY: Final = 0x20
_FRAME_HEAD: Final = struct.Struct(">BHBBL")  # 24-bit length, type, flags, stream id
_RECEIVING: Final = (
    StreamState.OPEN,
    StreamState.HALF_CLOSED_LOCAL,
)  # a tuple: Enum hashes in Python


class StaysOpenAfterGoaway(h2.connection.H2ConnectionStateMachine):
    """h2's connection states, except that a GOAWAY does not close the connection.

    h2 refuses every frame after a GOAWAY (python-hyper/h2#1181), even within the same
    read, so the streams a graceful GOAWAY names could never finish. The connection opens
    no stream once a GOAWAY came and closes when its streams are done.
    """

    def process_input(self, input_: h2.connection.ConnectionInputs) -> list[h2.events.Event]:
        if input_ is h2.connection.ConnectionInputs.RECV_GOAWAY:
            return []
        return super().process_input(input_)


class H2State(h2.connection.H2Connection):
    """h2's connection, without its count of open streams on every new stream, and with a
    leaner way to send a request's headers.

    h2 counts open streams by scanning every stream it holds, each time a stream opens (~8 %
    of the CPU per request with 128 streams in flight). The connection keeps the server's
    limit itself (a slot per stream, held until the request releases it, never fewer than
    h2 would count), so h2's check is redundant; the scan also forgets closed streams,
    which :meth:`forget_closed` runs now and then instead.
    """

    @property
    def open_outbound_streams(self) -> int:
        return 0

    def forget_closed(self) -> None:
        h2.connection.H2Connection.open_outbound_streams.fget(self)  # type: ignore[attr-defined]

    def send_request_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """Open ``stream_id`` with ``headers`` (``:method`` then ``:authority`` first, as
        ``header_block`` puts them), as h2's ``send_headers`` would.

        h2 rebuilds every field, works out validation flags it then does not use, and makes
        a frame object per frame: ~100 k instructions per request, ~5 % of a TLS HTTP/2 job.
        Here: the same connection and stream state changes, then the encoded block framed
        directly (HEADERS, then CONTINUATIONs past the server's frame size).
        """
        if self.remote_settings.max_concurrent_streams < 1:
            # h2's own path, for its TooManyStreamsError (the check the override above skips)
            self.send_headers(stream_id, headers, end_stream=end_stream)
            return
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        stream = self._begin_new_stream(stream_id, AllowedStreamIDs.ODD)
        stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
        flags = _END_HEADERS
        if end_stream:
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
            flags |= _END_STREAM
        # what h2 records from a request's headers: the authority, and the method (a HEAD
        # response's content-length is not checked against its empty body)
        stream._authority = headers[1][1]
        stream.request_method = headers[0][1]
        block = self.encoder.encode(headers)
        self._data_to_send += _frames(stream_id, block, flags, self.max_outbound_frame_size)

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """h2's, without the exception h2 raises and catches for each stream it already
        forgot (closed, and cleaned up by :meth:`forget_closed`): for those only the
        connection's window is given back, as h2 does."""
        if (
            stream_id in self.streams
            or stream_id % 2 == 0
            or not 0 < stream_id <= (self.highest_outbound_stream_id or 0)
            or acknowledged_size < 0
        ):
            super().acknowledge_received_data(acknowledged_size, stream_id)
            return
        manager = self._inbound_flow_control_window_manager
        increment = manager.process_bytes(acknowledged_size)
        if increment:
            update = WindowUpdateFrame(0)
            update.window_increment = increment
            self._prepare_for_sending([update])

    def receive_data(self, data: bytes) -> list[h2.events.Event]:  # type: ignore[override]
        """h2's ``receive_data``, the frames of a response read without h2's frame objects.

        h2 parses each frame into a hyperframe object (flags as a set of names), builds the
        text of every frame for a trace log nobody reads, and dispatches through generic
        handlers: ~40 % of its receive cost. A DATA frame without padding and a HEADERS
        frame with the whole block (no padding, no priority) on a stream that is receiving
        make here the calls h2's handlers make (the connection's state machine, its window,
        the HPACK decoder, then the stream's own ``receive_data``/``receive_headers``, which
        keep every check: content length, states, informational responses, trailers). Any
        other frame, one on a stream not receiving (closed, reset, unknown: h2 answers
        those), or one over the frame size, goes through h2's own path, as does everything
        once a header block continues past its frame.
        """
        buffer = self.incoming_buffer
        if buffer._headers_buffer:  # a header block awaits its CONTINUATIONs
            return super().receive_data(data)
        if buffer._data:  # the start of a frame from the last read, header checked
            buffer._data += data
            data = bytes(buffer._data)
            del buffer._data[:]
        events: list[h2.events.Event] = []
        streams = self.streams
        max_size = self.max_inbound_frame_size
        total = len(data)
        pos = 0
        while total - pos >= 9:
            high, low, kind, flags, stream_id = _FRAME_HEAD.unpack_from(data, pos)
            start = pos + 9
            end = start + (high << 16 | low)
            if end > total:
                break
            stream = streams.get(stream_id & 0x7FFFFFFF)
            if (
                stream is not None
                and end - start <= max_size
                and stream.state_machine.state in _RECEIVING
            ):
                if kind == _DATA and not flags & _PADDED:
                    self._fast(self._receive_data, events, stream, data[start:end], flags)
                    pos = end
                    continue
                if (
                    kind == _HEADERS
                    and flags & (_END_HEADERS | _PADDED | _PRIORITY) == _END_HEADERS
                ):
                    self._fast(self._receive_headers, events, stream, data[start:end], flags)
                    pos = end
                    continue
            events += super().receive_data(data[pos:end])  # one frame, through h2
            pos = end
            if buffer._headers_buffer:  # its CONTINUATIONs follow: h2 reads the rest
                events += super().receive_data(data[pos:])
                return events
        if pos < total:  # a frame's start: h2 keeps it, and checks its header as it would
            events += super().receive_data(data[pos:])
        return events

    def _fast(
        self,
        handler: _Handler,
        events: list[h2.events.Event],
        stream: h2.stream.H2Stream,
        payload: bytes,
        flags: int,
    ) -> None:
        try:
            events += handler(stream, payload, bool(flags & _END_STREAM))
        except h2.exceptions.ProtocolError as exc:  # as h2's receive_data: GOAWAY, then raise
            self._terminate_connection(exc.error_code)
            raise

    def _receive_data(
        self, stream: h2.stream.H2Stream, payload: bytes, end_stream: bool
    ) -> list[h2.events.Event]:
        """h2's ``_receive_data_frame`` for a DATA frame without padding."""
        events = self.state_machine.process_input(ConnectionInputs.RECV_DATA)
        self._inbound_flow_control_window_manager.window_consumed(len(payload))
        frames, stream_events = stream.receive_data(payload, end_stream, len(payload))
        self._prepare_for_sending(frames)
        return events + stream_events

    def _receive_headers(
        self, stream: h2.stream.H2Stream, payload: bytes, end_stream: bool
    ) -> list[h2.events.Event]:
        """h2's ``_receive_headers_frame`` for a whole block on a stream it knows."""
        headers = h2.connection._decode_headers(self.decoder, payload)
        events = self.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        frames, stream_events = stream.receive_headers(
            headers, end_stream, self.config.header_encoding
        )
        self._prepare_for_sending(frames)
        return events + stream_events


def _frames(stream_id: int, block: bytes, flags: int, max_size: int) -> bytes:
    """HEADERS (and CONTINUATION) frames carrying ``block``, as h2 splits it."""
    if len(block) <= max_size:
        return _head(len(block), _HEADERS, flags, stream_id) + block
    pieces = [block[i : i + max_size] for i in range(0, len(block), max_size)]
    out = [_head(len(pieces[0]), _HEADERS, flags & ~_END_HEADERS, stream_id), pieces[0]]
    for index, piece in enumerate(pieces[1:], 2):
        last = _END_HEADERS if index == len(pieces) else 0
        out += [_head(len(piece), _CONTINUATION, last, stream_id), piece]
    return b"".join(out)


def _head(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return _FRAME_HEAD.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id & 0x7FFFFFFF)
