import base64
import gzip
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patient_sidekiq.errors import WireFormatError
from patient_sidekiq.wire.payload import GZIP_THRESHOLD, Payload, encode_body


def test_text_is_gzipped_from_4096_bytes_only_when_smaller() -> None:
    below = encode_body(b"a" * (GZIP_THRESHOLD - 1), "text/plain")
    at = encode_body(b"a" * GZIP_THRESHOLD, "text/plain", clock=lambda: 1795615729.9)
    assert below is not None
    assert below.encoding == "text"
    assert at is not None
    assert at.encoding == "gzipped"
    assert gzip.decompress(base64.b64decode(at.value)) == b"a" * GZIP_THRESHOLD
    incompressible = bytes(random.Random(1).choice(range(33, 127)) for _ in range(5000))
    stays_text = encode_body(incompressible, "text/plain")
    assert stays_text is not None
    assert stays_text.raw == incompressible


def test_gzip_header_carries_rubys_fields() -> None:
    payload = encode_body(b"x" * 5000, "application/json", clock=lambda: 1795615729.9)
    assert payload is not None
    raw = base64.b64decode(payload.value)
    assert raw[:10].hex() == "1f8b0800f1eb066b0003"


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("text/plain", "text"),
        ("application/json", "text"),
        ("application/vnd.api+json", "binary"),
        ("application/problem+json", "binary"),
        ("application/xml; charset=utf-8", "text"),
        ("application/javascript", "text"),
        ("Text/Plain", "binary"),
        (None, "binary"),
        ("image/png", "binary"),
    ],
)
def test_text_or_binary_follows_the_gems_mimetype_rule(content_type: str | None, kind: str) -> None:
    payload = encode_body(b"abc", content_type)
    assert payload is not None
    assert payload.encoding == kind


def test_null_value_means_no_body() -> None:
    assert Payload.from_wire(None) is None
    assert Payload.from_wire({"encoding": "text", "value": None, "charset": "UTF-8"}) is None


def test_base64_reading_is_lenient_like_ruby() -> None:
    payload = Payload("binary", "YWJj\nZGVm\n", "ASCII-8BIT")
    assert payload.raw == b"abcdef"


@given(
    st.binary(max_size=10000),
    st.sampled_from(
        [
            None,
            "text/plain",
            "text/plain; charset=utf-8",
            "text/html; charset=iso-8859-1",
            "application/octet-stream",
            "text/plain; charset=Shift_JIS",
            "text/plain; charset=UTF-16",
        ]
    ),
)
def test_every_body_round_trips_to_the_bytes_ruby_would_read(
    body: bytes, content_type: str | None
) -> None:
    payload = encode_body(body, content_type)
    assert payload is not None
    loaded = Payload.from_wire(payload.to_wire())
    assert loaded == payload
    if payload.encoding == "binary" or payload.charset != "UTF-8":
        assert payload.raw == body or payload.raw == body.decode("utf-8").encode()
    else:
        assert isinstance(payload.text, str)


@given(
    st.dictionaries(
        st.sampled_from(["encoding", "value", "charset"]), st.none() | st.text() | st.integers()
    )
)
def test_arbitrary_wire_bodies_raise_only_documented_errors(data: dict[str, object]) -> None:
    try:
        payload = Payload.from_wire(data)
        if payload is not None:
            _ = payload.raw
            _ = payload.text
    except WireFormatError:
        pass
