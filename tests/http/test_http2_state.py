"""H2State's lean request HEADERS against h2's own send_headers: the same bytes on the wire,
the same connection and stream states after, and h2's refusals kept."""

from __future__ import annotations

import h2.connection
import h2.exceptions
import hyperframe.frame
import pytest

from patient_sidekiq.http import http2_connection
from patient_sidekiq.http.http2_headers import PlainEncoder, header_block
from patient_sidekiq.http.http2_state import H2State, StaysOpenAfterGoaway

FIELDS = [(b"host", b"api.test"), (b"x-request-id", b"rid"), (b"authorization", b"Bearer x")]


def client(max_frame: int = 16384, max_streams: int = 100) -> H2State:
    state = H2State(config=http2_connection._CONFIG)
    state.state_machine = StaysOpenAfterGoaway()
    state.encoder = PlainEncoder()  # type: ignore[assignment]
    state.initiate_connection()
    settings = hyperframe.frame.SettingsFrame(0)
    settings.settings = {
        hyperframe.frame.SettingsFrame.MAX_FRAME_SIZE: max_frame,
        hyperframe.frame.SettingsFrame.MAX_CONCURRENT_STREAMS: max_streams,
    }
    state.receive_data(settings.serialize())
    state.data_to_send()
    return state


def snapshot(state: H2State, stream_id: int) -> tuple[object, ...]:
    stream = state.streams[stream_id]
    return (
        state.state_machine.state,
        state.highest_outbound_stream_id,
        stream.state_machine.state,
        stream._authority,
        stream.request_method,
        stream.outbound_flow_control_window,
    )


@pytest.mark.parametrize("end_stream", [True, False])
@pytest.mark.parametrize(
    "fields",
    [
        FIELDS,
        [*FIELDS, (b"x-big", b"v" * 40_000)],  # past the frame size: CONTINUATIONs
    ],
)
def test_request_headers_go_out_as_h2_sends_them(
    fields: list[tuple[bytes, bytes]], end_stream: bool
) -> None:
    ours, theirs = client(), client()
    for stream_id in (1, 3):  # the first block also carries the table size update
        method = b"GET" if end_stream else b"POST"
        block, _ = header_block(method, "https", b"api.test", b"/p?q=1", fields)
        ours.send_request_headers(stream_id, block, end_stream)
        h2.connection.H2Connection.send_headers(theirs, stream_id, block, end_stream=end_stream)
        assert ours.data_to_send() == theirs.data_to_send()
        assert snapshot(ours, stream_id) == snapshot(theirs, stream_id)


def test_a_body_and_the_response_follow_as_with_h2() -> None:
    state = client()
    block, _ = header_block(b"HEAD", "https", b"api.test", b"/", FIELDS)
    state.send_request_headers(1, block, False)
    state.send_data(1, b"x", end_stream=True)
    assert state.streams[1].request_method == b"HEAD"
    response = hyperframe.frame.HeadersFrame(1)
    response.data = PlainEncoder().encode([(b":status", b"200"), (b"content-length", b"9")])
    response.flags = {"END_HEADERS", "END_STREAM"}  # type: ignore[assignment]
    events = state.receive_data(response.serialize())
    kinds = [type(event).__name__ for event in events]
    assert kinds == ["ResponseReceived", "StreamEnded"]  # HEAD: no body despite the length


def test_h2_refusals_stay() -> None:
    state = client()
    block, _ = header_block(b"GET", "https", b"api.test", b"/", FIELDS)
    state.send_request_headers(3, block, True)
    with pytest.raises(h2.exceptions.StreamIDTooLowError):
        state.send_request_headers(1, block, True)
    none_allowed = client(max_streams=0)
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        none_allowed.send_request_headers(1, block, True)
    closed = client()
    closed.close_connection()
    with pytest.raises(h2.exceptions.ProtocolError):
        closed.send_request_headers(1, block, True)
