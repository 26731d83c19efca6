"""Marshal strings as Ruby writes them (golden bytes) and as Ruby may write them."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patient_sidekiq.errors import PlaintextFormatError
from patient_sidekiq.ruby.ruby_marshal import marshal_dump_string, marshal_load_string

UTF8_TRAILER = bytes.fromhex("063a064554")  # 1 ivar, :E => true


@pytest.mark.parametrize(
    ("length", "encoded_length"),
    [
        (0, "00"),
        (1, "06"),
        (122, "7f"),
        (123, "017b"),
        (255, "01ff"),
        (256, "020001"),
        (65535, "02ffff"),
        (65536, "03000001"),
        (16777216, "0400000001"),
    ],
)
def test_length_encoding_at_boundaries(length: int, encoded_length: str) -> None:
    text = "a" * length
    dumped = marshal_dump_string(text)
    assert dumped == b"\x04\x08I\x22" + bytes.fromhex(encoded_length) + text.encode() + UTF8_TRAILER
    assert marshal_load_string(dumped) == text


def test_length_counts_utf8_bytes_not_characters() -> None:
    assert marshal_dump_string("ü") == bytes.fromhex("04084922") + b"\x07\xc3\xbc" + UTF8_TRAILER


@pytest.mark.parametrize(
    "dumped",
    [
        bytes.fromhex("04084922") + b"\x07hi" + bytes.fromhex("063a064546"),  # US-ASCII
        bytes.fromhex("040822") + b"\x07hi",  # binary string, no encoding ivar
    ],
)
def test_reads_other_string_encodings_ruby_writes(dumped: bytes) -> None:
    assert marshal_load_string(dumped) == "hi"


@pytest.mark.parametrize(
    ("dumped", "problem"),
    [
        (b"", "ends early"),
        (b"\x04\x09\x22\x00", "not Marshal 4.8"),
        (bytes.fromhex("04085b00"), "expected a String"),  # an empty Array
        (bytes.fromhex("040822") + b"\x0ahi", "ends early"),
        (bytes.fromhex("040822fa"), "negative"),
        (bytes.fromhex("040822") + b"\x07hi!", "1 bytes follow"),
        (bytes.fromhex("04084922") + b"\x07hi" + bytes.fromhex("063a0645"), "ends early"),
        (bytes.fromhex("04084922") + b"\x07hi" + bytes.fromhex("063a064530"), "neither UTF-8"),
        (bytes.fromhex("04084922") + b"\x07hi" + bytes.fromhex("073a064554"), "other than"),
        (bytes.fromhex("040822") + b"\x06\xff", "not UTF-8"),
    ],
)
def test_refuses_everything_but_a_string(dumped: bytes, problem: str) -> None:
    with pytest.raises(PlaintextFormatError, match=problem):
        marshal_load_string(dumped)


def test_refuses_text_that_is_not_unicode() -> None:
    with pytest.raises(PlaintextFormatError, match="not valid Unicode"):
        marshal_dump_string("\ud800")


@settings(max_examples=200)
@given(st.text())
def test_round_trip(text: str) -> None:
    assert marshal_load_string(marshal_dump_string(text)) == text


@settings(max_examples=200)
@given(st.binary())
def test_arbitrary_bytes_load_or_refuse(data: bytes) -> None:
    with contextlib.suppress(PlaintextFormatError):
        marshal_load_string(b"\x04\x08" + data)
