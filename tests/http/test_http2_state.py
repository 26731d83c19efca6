"""H2State's lean request HEADERS against h2's own send_headers: the same bytes on the wire,
the same connection and stream states after, and h2's refusals kept."""

from __future__ import annotations

import re

import h2.connection
import h2.events
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


# --- the receive side: H2State.receive_data against h2's own, frame by frame ---------------


class H2Reference(H2State):
    """The same connection, reading everything through h2's own receive_data."""

    def receive_data(self, data: bytes) -> list[h2.events.Event]:  # type: ignore[override]
        return h2.connection.H2Connection.receive_data(self, data)


def frame(
    kind: type[hyperframe.frame.Frame], stream_id: int, *flags: str, **fields: object
) -> bytes:
    made = kind(stream_id)
    for name, value in fields.items():
        setattr(made, name, value)
    made.flags = set(flags)  # type: ignore[assignment]
    return made.serialize()


def block(*fields: tuple[bytes, bytes]) -> bytes:
    return PlainEncoder().encode(list(fields))[1:]  # without the table size update


OK = block((b":status", b"200"), (b"content-length", b"5"), (b"server", b"t"))
H = hyperframe.frame.HeadersFrame
D = hyperframe.frame.DataFrame


def response(stream_id: int, body: bytes = b"hello") -> bytes:
    return frame(H, stream_id, "END_HEADERS", data=OK) + frame(
        D, stream_id, "END_STREAM", data=body
    )


SCENARIOS = {
    "responses": response(1) + response(3),
    "no body": frame(H, 1, "END_HEADERS", "END_STREAM", data=block((b":status", b"204"))),
    "unknown flag bits": frame(H, 1, "END_HEADERS", data=OK)[:4]
    + b"\xc4"
    + frame(H, 1, "END_HEADERS", data=OK)[5:]
    + frame(D, 1, "END_STREAM", data=b"hello"),
    "padded and priority": frame(
        H, 1, "END_HEADERS", "PRIORITY", data=OK, depends_on=0, stream_weight=15
    )
    + frame(D, 1, "PADDED", data=b"he", pad_length=7)
    + frame(D, 1, "END_STREAM", data=b"llo"),
    "continuation": frame(H, 1, data=OK[:3])
    + frame(hyperframe.frame.ContinuationFrame, 1, "END_HEADERS", data=OK[3:])
    + frame(D, 1, "END_STREAM", data=b"hello")
    + response(3),
    "informational then final": frame(H, 1, "END_HEADERS", data=block((b":status", b"103")))
    + response(1),
    "informational with END_STREAM": frame(
        H, 1, "END_HEADERS", "END_STREAM", data=block((b":status", b"100"))
    ),
    "trailers": frame(H, 1, "END_HEADERS", data=block((b":status", b"200")))
    + frame(D, 1, data=b"x")
    + frame(H, 1, "END_HEADERS", "END_STREAM", data=block((b"grpc-status", b"0"))),
    "trailers without END_STREAM": frame(H, 1, "END_HEADERS", data=OK)
    + frame(H, 1, "END_HEADERS", data=block((b"x", b"y"))),
    "body longer than its content-length": frame(H, 1, "END_HEADERS", data=OK)
    + frame(D, 1, "END_STREAM", data=b"hello!"),
    "body shorter than its content-length": frame(H, 1, "END_HEADERS", data=OK)
    + frame(D, 1, "END_STREAM", data=b"hell"),
    "bad content-length": frame(
        H, 1, "END_HEADERS", data=block((b":status", b"200"), (b"content-length", b"x"))
    ),
    "headers after the stream ended": response(1) + frame(H, 1, "END_HEADERS", data=OK),
    "data after the stream ended": response(1) + frame(D, 1, data=b"x"),
    "data on a stream never opened": frame(D, 7, data=b"x"),
    "data on stream 0": frame(D, 1, data=b"x")[:5] + bytes(4) + b"x",
    "undecodable header block": frame(H, 1, "END_HEADERS", data=b"\xff\xff\xff\xff"),
    "frame over the size limit": frame(D, 1, data=b"x" * 16385),
    "more data than the stream window": frame(H, 1, "END_HEADERS", data=block((b":status", b"200")))
    + b"".join(frame(D, 1, data=b"x" * 16384) for _ in range(5)),
    "control frames between": frame(H, 1, "END_HEADERS", data=OK)
    + frame(hyperframe.frame.PingFrame, 0, opaque_data=b"12345678")
    + frame(hyperframe.frame.WindowUpdateFrame, 1, window_increment=100)
    + frame(hyperframe.frame.SettingsFrame, 0, settings={4: 1000})
    + frame(D, 1, "END_STREAM", data=b"hello")
    + frame(hyperframe.frame.RstStreamFrame, 3, error_code=8)
    + frame(hyperframe.frame.GoAwayFrame, 0, last_stream_id=3, error_code=0),
}


def describe(events: list[h2.events.Event]) -> list[str]:
    return [f"{type(event).__name__} {sorted(map(repr, vars(event).items()))}" for event in events]


def run(state: H2State, chunks: list[bytes]) -> list[object]:
    seen: list[object] = []
    for chunk in chunks:
        try:
            seen.append(describe(state.receive_data(chunk)))
        except h2.exceptions.H2Error as exc:
            seen.append((type(exc).__name__, re.sub("0x[0-9a-f]+", "", str(exc))))
            break
        seen.append(state.data_to_send())
    windows = state._inbound_flow_control_window_manager
    seen += [state.data_to_send(), state.state_machine.state, windows.current_window_size]
    for stream_id, stream in sorted(state.streams.items()):
        seen.append(
            (
                stream_id,
                stream.state_machine.state,
                stream._actual_content_length,
                stream._expected_content_length,
                stream._inbound_window_manager.current_window_size,
            )
        )
    return seen


def opened(kind: type[H2State]) -> H2State:
    state = client()
    state.__class__ = kind
    headers, _ = header_block(b"GET", "https", b"api.test", b"/", FIELDS)
    for stream_id in (1, 3, 5):
        state.send_request_headers(stream_id, headers, True)
    state.reset_stream(5)
    state.data_to_send()
    return state


def splits(data: bytes) -> list[list[bytes]]:
    """All at once, byte by byte, and in two at a few points (frame boundaries included)."""
    points = sorted({1, 8, 9, 10, 17, 18, len(data) // 2, len(data) - 1})
    return [[data], [data[i : i + 1] for i in range(len(data))]] + [
        [data[:p], data[p:]] for p in points if 0 < p < len(data)
    ]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_responses_are_read_as_h2_reads_them(name: str) -> None:
    data = SCENARIOS[name] + frame(D, 5, data=b"late")  # the reset stream: h2's RST answer
    for chunks in splits(data):
        assert run(opened(H2State), chunks) == run(opened(H2Reference), chunks), chunks


@pytest.mark.parametrize("forget", [True, False])
def test_acknowledgements_are_h2s(forget: bool) -> None:
    body = frame(H, 1, "END_HEADERS", data=block((b":status", b"200"))) + b"".join(
        frame(D, 1, data=b"x" * 16000) for _ in range(3)
    )
    body += frame(H, 3, "END_HEADERS", data=block((b":status", b"200")))
    body += frame(D, 3, "END_STREAM", data=b"y" * 9000)
    results = []
    for kind in (H2State, H2Reference):
        state = opened(kind)
        state.receive_data(body)
        if forget:
            state.forget_closed()  # stream 3 (ended) and 5 (reset) are gone
        seen: list[object] = []
        for stream_id, size in [(1, 48000), (3, 9000), (5, 0), (3, 1), (2, 1), (9, 1), (1, -1)]:
            try:
                state.acknowledge_received_data(size, stream_id)
                seen.append(state.data_to_send())
            except (h2.exceptions.H2Error, ValueError) as exc:
                seen.append((type(exc).__name__, str(exc)))
        seen += run(state, [])
        results.append(seen)
    assert results[0] == results[1]
