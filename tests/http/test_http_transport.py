"""http_transport: the response headers as the gem's callbacks see them."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patient_sidekiq.http.http_transport import (
    decoded_fields,
    joined_fields,
    joined_raw_fields,
    read_stream,
    whole_body,
)

_NAMES = st.sampled_from(
    [
        b"date",
        b"vary",
        b"set-cookie",
        b"location",
        b"upgrade",
        b"x-a",
        b"authorization",
        b"\xc3\xa9",
    ]
)
_VALUES = st.binary().map(bytes) | st.text(st.sampled_from(" ,\t\x0b\x1cAb"), max_size=8).map(
    str.encode
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=5))
def test_the_one_pass_join_reads_as_decoding_then_joining(raw: list[tuple[bytes, bytes]]) -> None:
    assert joined_raw_fields(raw) == joined_fields(decoded_fields(raw))
    assert list(joined_raw_fields(raw)) == list(joined_fields(decoded_fields(raw)))


def test_a_date_keeps_its_comma_and_odd_commas_are_respaced() -> None:
    raw = [
        (b"date", b"Fri, 04 Dec 2026 15:00:00 GMT"),
        (b"x-list", b"a ,b,  c, "),
        (b"vary", b"Accept, Origin"),
    ]
    assert joined_raw_fields(raw) == {
        "date": "Fri, 04 Dec 2026 15:00:00 GMT",
        "x-list": "a, b, c",
        "vary": "accept, origin",
    }


class _Chunks(httpx.AsyncByteStream):
    """A stream of the given chunks (an iterator, not a generator: nothing to finalize)."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)


_GZIPPED = gzip.compress(b"hello " * 50)


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b"", {}),
        (b"", {"content-length": "0"}),
        (b"abc", {"content-length": "3"}),
        (b"abc", {"content-length": "2000"}),
        (b"x" * 101, {}),
        (_GZIPPED, {"content-encoding": "gzip"}),
        (_GZIPPED, {"content-encoding": " GZIP ", "content-length": str(len(_GZIPPED))}),
        (zlib.compress(b"y" * 99), {"content-encoding": "deflate"}),
        (zlib.compress(b"y" * 101)[2:-4], {"content-encoding": "deflate"}),
        (b"", {"content-encoding": "gzip"}),
        (b"not gzip", {"content-encoding": "gzip"}),
        (b"abc", {"content-encoding": "br"}),
    ],
)
@pytest.mark.parametrize("framed", [True, False])
async def test_a_whole_body_reads_as_its_one_chunk_stream(
    data: bytes, headers: dict[str, str], framed: bool
) -> None:
    expected_headers = dict(headers)
    try:
        expected: object = await read_stream(
            _Chunks(data) if data else _Chunks(), expected_headers, 100, framed=framed
        )
    except Exception as exc:  # the same error, whichever
        expected = type(exc)
    got_headers = dict(headers)
    try:
        got: object = whole_body(data, got_headers, 100, framed=framed)
    except Exception as exc:
        got = type(exc)
    assert got == expected
    assert got_headers == expected_headers
