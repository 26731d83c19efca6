"""http_transport: the response headers as the gem's callbacks see them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from patient_sidekiq.http.http_transport import decoded_fields, joined_fields, joined_raw_fields

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


@settings(max_examples=1000)
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
