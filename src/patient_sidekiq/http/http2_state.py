"""h2's connection state, trimmed where :mod:`~patient_sidekiq.http.http2_connection` does the
work itself (or must not have h2 do it).

* A GOAWAY does not close h2's state (:class:`StaysOpenAfterGoaway`), so the streams a
  graceful one names can finish.
* h2 does not count open streams on every new stream (:class:`H2State`): the connection
  keeps the server's limit itself.
* A request's HEADERS go out without h2's per-stream ``send_headers`` machinery
  (:meth:`H2State.send_request_headers`): the same state changes and the same bytes, for the
  header block :func:`~patient_sidekiq.http.http2_headers.header_block` already checked.

These reach into h2's internals (h2 4.x); ``tests/http/test_http2_state.py`` pins each
against what h2 itself does. Touches no Redis keys.
"""

from __future__ import annotations

import struct
from typing import Final

import h2.connection
import h2.events
from h2.connection import AllowedStreamIDs, ConnectionInputs
from h2.stream import StreamInputs

__all__ = ["H2State", "StaysOpenAfterGoaway"]

_HEADERS: Final = 0x1
_CONTINUATION: Final = 0x9
_END_STREAM: Final = 0x1
_END_HEADERS: Final = 0x4
_FRAME_HEAD: Final = struct.Struct(">BHBBL")  # 24-bit length, type, flags, stream id


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
