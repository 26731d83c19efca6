"""http1_codec: the request bytes we write and the responses llhttp parses for us.

What these pin is h11's reading, which the codec replaced on the hot path: the same bytes
out, the same headers, framing and error wording in.
"""

from __future__ import annotations

import h11
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patient_sidekiq.http.http1_codec import (
    MAX_HEAD_SIZE,
    ResponseParser,
    encode_plain,
    encode_request,
)


def _h11_bytes(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    connection = h11.Connection(h11.CLIENT)
    data = connection.send(h11.Request(method=method, target=target, headers=headers)) or b""
    if body:
        data += connection.send(h11.Data(data=body)) or b""
    return data + (connection.send(h11.EndOfMessage()) or b"")


def parse(*pieces: bytes, head_only: bool = False, eof: bool = False) -> ResponseParser:
    parser = ResponseParser(head_only=head_only)
    for piece in pieces:
        parser.feed(piece)
    if eof:
        parser.feed_eof()
    return parser


def body_of(parser: ResponseParser) -> bytes:
    return b"".join(parser.take_body())


# --- requests ---------------------------------------------------------------------------------


def test_a_plain_request_is_written_as_h11_writes_it() -> None:
    headers = [(b"host", b"example.com:8080"), (b"X-Trace", b"a b\tc"), (b"content-length", b"3")]
    data = encode_request(b"POST", b"/p?q=1", headers, b"abc")
    assert data == (
        b"POST /p?q=1 HTTP/1.1\r\nhost: example.com:8080\r\nX-Trace: a b\tc\r\n"
        b"content-length: 3\r\n\r\nabc"
    )
    assert data == _h11_bytes(b"POST", b"/p?q=1", headers, b"abc")


_NAME = st.text("abcXYZ-_!#~", min_size=1, max_size=8).map(str.encode)
_VALUE = st.binary(max_size=12)


@given(st.lists(st.tuples(_NAME, _VALUE), max_size=4), st.binary(max_size=5))
def test_any_header_value_is_refused_or_written_exactly_as_h11_would(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    fields = [(b"host", b"h"), *headers, (b"content-length", str(len(body)).encode())]
    try:
        expected = _h11_bytes(b"GET", b"/", fields, body)
    except h11.LocalProtocolError:
        with pytest.raises(httpx.LocalProtocolError):
            encode_request(b"GET", b"/", fields, body)
    else:
        assert encode_request(b"GET", b"/", fields, body) == expected


_TEXT = st.text(st.sampled_from("aZ09-_!:~ \t\r\n\x00\x7f\u00e9"), max_size=10)


@given(
    st.sampled_from(["GET", "POST", "G T", "GÉT", ""]),
    st.text(st.sampled_from("/a?=: \r\n\x00\u00e9"), max_size=6),
    _TEXT,
    st.dictionaries(_TEXT, _TEXT, max_size=4),
    st.binary(max_size=5),
)
def test_the_plain_head_is_written_as_encode_request_writes_it_or_left_to_it(
    method: str, target: str, host: str, headers: dict[str, str], body: bytes
) -> None:
    # Whatever the one-match check lets through, the per-part checks (and so h11) write the
    # same bytes; anything else is left to them (None).
    data = encode_plain(method, target, host, headers, body)
    if data is None:
        return
    fields = [
        (b"host", host.encode()),
        *((name.encode(), value.encode()) for name, value in headers.items()),
        (b"content-length", str(len(body)).encode()),
    ]
    assert data == encode_request(method.encode(), target.encode(), fields, body)
    assert data == _h11_bytes(method.encode(), target.encode(), fields, body)


def test_the_usual_head_takes_the_one_match() -> None:
    headers = {"x-request-id": "r1", "user-agent": "PatientHttp", "x-t": "a b\tc"}
    assert encode_plain("POST", "/p?q=1", "h:81", headers, b"abc") == (
        b"POST /p?q=1 HTTP/1.1\r\nhost: h:81\r\nx-request-id: r1\r\n"
        b"user-agent: PatientHttp\r\nx-t: a b\tc\r\ncontent-length: 3\r\n\r\nabc"
    )
    assert encode_plain("GET", "/", "h", {"x": "a\r\ny: b"}, b"") is None
    assert encode_plain("GET", "/", "h", {"x: y": "b"}, b"") is None


@pytest.mark.parametrize(
    ("method", "target", "name", "value"),
    [
        (b"GET", b"/", b"x-bad", b"a\nb"),
        (b"GET", b"/", b"x bad", b"v"),
        (b"GET", b"/a b", b"x", b"v"),
        (b"G T", b"/", b"x", b"v"),
    ],
)
def test_what_h11_refuses_is_a_local_protocol_error(
    method: bytes, target: bytes, name: bytes, value: bytes
) -> None:
    with pytest.raises(httpx.LocalProtocolError):
        encode_request(method, target, [(b"host", b"h"), (name, value)], b"")


# --- responses --------------------------------------------------------------------------------


def test_headers_are_lowercase_and_trimmed_and_the_body_follows() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nX-A:   v1  \r\nContent-Length: 2\r\n\r\nok")
    assert (parser.status, parser.reason) == (200, b"OK")
    assert parser.headers == [(b"x-a", b"v1"), (b"content-length", b"2")]
    assert body_of(parser) == b"ok"
    assert parser.complete
    assert parser.reusable


def test_a_restarted_parser_reads_the_next_response_of_the_connection() -> None:
    parser = parse(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    assert body_of(parser) == b"ok"
    assert parser.reusable
    for response, status, body in [
        (b"HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n", 204, b""),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc",
            201,
            b"abc",
        ),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 404, b""),
    ]:
        parser.restart()
        assert not parser.head_done
        for byte in range(len(response)):
            parser.feed(response[byte : byte + 1])
        assert parser.complete
        assert parser.status == status
        assert body_of(parser) == body
        assert len(parser.headers) == 1 + (status == 404)
    assert not parser.reusable  # the last said close


def test_a_response_split_anywhere_parses_the_same() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Y: z\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    for cut in range(1, len(raw)):
        parser = parse(raw[:cut], raw[cut:])
        assert parser.headers == [(b"transfer-encoding", b"chunked"), (b"x-y", b"z")]
        assert body_of(parser) == b"abc"
        assert parser.complete
        assert parser.reusable


def test_informational_responses_are_skipped() -> None:
    parser = parse(b"HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\nHTTP/1.1 201 Created\r\n")
    assert not parser.head_done
    parser.feed(b"Content-Length: 0\r\n\r\n")
    assert (parser.status, parser.headers, parser.complete) == (
        201,
        [(b"content-length", b"0")],
        True,
    )


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_end_with_their_headers(status: int) -> None:
    parser = parse(f"HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\n".encode())
    assert parser.complete
    assert body_of(parser) == b""
    assert parser.reusable


def test_a_head_response_ends_with_its_headers_and_is_not_reused() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", head_only=True)
    assert parser.complete
    assert body_of(parser) == b""
    assert not parser.reusable


def test_a_body_read_until_close_ends_at_eof_and_the_connection_is_not_reused() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\n\r\nsome", b" more")
    assert not parser.complete
    parser.feed_eof()
    assert parser.complete
    assert body_of(parser) == b"some more"
    assert not parser.reusable


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_close_and_http10_responses_are_not_reused(head: bytes) -> None:
    parser = parse(head)
    assert parser.complete
    assert not parser.reusable


def test_bytes_after_the_response_keep_it_but_forbid_reuse() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    assert parser.complete
    assert body_of(parser) == b"ok"
    assert not parser.reusable


# --- a response cut short: h11's wording, which ruby_errors maps to the gem's errors ----------


@pytest.mark.parametrize(
    ("pieces", "message"),
    [
        ((), "Server disconnected without sending a response."),
        ((b"HTTP/1.1 200 OK\r\nContent-",), "peer unexpectedly closed connection"),
        (
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",),
            "peer closed connection without sending complete message body "
            "(received 3 bytes, expected 10)",
        ),
        (
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",),
            "peer closed connection without sending complete message body "
            "(incomplete chunked read)",
        ),
    ],
)
def test_eof_mid_response_is_reported_as_h11_reported_it(
    pieces: tuple[bytes, ...], message: str
) -> None:
    parser = parse(*pieces)
    with pytest.raises(
        httpx.RemoteProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        parser.feed_eof()


def test_a_malformed_response_is_a_remote_protocol_error() -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        parse(b"garbage\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")


def test_a_head_larger_than_the_limit_is_refused() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    filler = b"x-filler: " + b"f" * 988 + b"\r\n"
    for _ in range(MAX_HEAD_SIZE // len(filler)):
        parser.feed(filler)
    with pytest.raises(httpx.RemoteProtocolError, match="Receive buffer too long"):
        parser.feed(filler)


def test_switching_protocols_is_refused() -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="Switching protocols"):
        parse(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")
