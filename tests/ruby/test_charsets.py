import pytest

from patient_sidekiq.ruby.charsets import (
    charset_of,
    is_text_mimetype,
    python_codec,
    ruby_encoding_name,
)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, "ASCII-8BIT"),
        ("text/plain", "ASCII-8BIT"),
        ("text/plain; charset=utf-8", "UTF-8"),
        ("text/plain; charset=ISO-8859-1", "ISO-8859-1"),
        ("text/plain; charset=latin1", "ASCII-8BIT"),  # Ruby has no "latin1" alias
        ('text/plain; charset="utf-8"', "ASCII-8BIT"),  # quoted: the gem's pattern does not match
        ("text/plain; charset=Shift_JIS", "Shift_JIS"),
        ("text/plain; charset=x-bogus", "ASCII-8BIT"),
        ("text/plain; charset=cp65001", "UTF-8"),
    ],
)
def test_charset_follows_rubys_encoding_table(content_type: str | None, expected: str) -> None:
    assert charset_of(content_type) == expected


def test_names_and_codecs() -> None:
    assert ruby_encoding_name("binary") == "ASCII-8BIT"
    assert ruby_encoding_name("nope") is None
    assert python_codec("ASCII-8BIT") is None
    assert python_codec("UTF-7") is None
    assert python_codec("ISO-2022-JP") == "iso2022_jp"
    assert python_codec("Windows-31J") == "cp932"
    assert is_text_mimetype("text/csv")
    assert not is_text_mimetype(None)
