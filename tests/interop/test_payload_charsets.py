"""Text bodies against real Ruby: the spec §2.1 rule run by Ruby's own encodings and JSON."""

from __future__ import annotations

import random

import pytest

from patient_sidekiq.wire.payload import encode_body
from tests.interop.conftest import run_ruby

pytestmark = pytest.mark.interop

# The documented rule (wire spec §2.1) in Ruby: label the bytes with the content-type's
# charset, convert to UTF-8 when Ruby can, then JSON-generate. nil = Ruby cannot write it.
RUBY_RULE = r"""
require "json"
cases = JSON.parse($stdin.read)
out = cases.map do |hex, charset|
  bytes = [hex].pack("H*")
  name = (Encoding.find(charset).name rescue "ASCII-8BIT")
  text = bytes.dup.force_encoding(name)
  unless text.encoding == Encoding::UTF_8
    begin
      text = text.encode(Encoding::UTF_8)
    rescue StandardError
      nil
    end
  end
  begin
    [text.encoding.name, JSON.parse(JSON.generate([text]))[0]]
  rescue JSON::GeneratorError
    nil
  end
end
puts JSON.generate(out)
"""

CHARSETS = [
    "utf-8",
    "iso-8859-1",
    "ISO-8859-15",
    "windows-1252",
    "Shift_JIS",
    "EUC-JP",
    "us-ascii",
    "UTF-16LE",
    "UTF-16",
    "UTF-32",
    "UTF-7",
    "koi8-r",
    "GB18030",
    "ISO-2022-JP",
    "x-bogus",
    "IBM437",
    "binary",
]
# Vendor tables differ between Ruby and Python for some byte sequences of these two, so
# they are checked with real text only.
VENDOR_CHARSETS = {"Big5": "big5", "Windows-31J": "cp932"}


def test_text_bodies_are_stored_as_ruby_stores_them() -> None:
    rng = random.Random(20261125)
    samples = [b"", b"hello", "café".encode(), "日本".encode("shift_jis"), "日本".encode("euc_jp")]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))) for _ in range(40)]
    samples += [bytes(rng.randrange(0x20, 0x7F) for _ in range(8)) for _ in range(5)]
    samples += ["\ufeffhi".encode("utf-16"), "\ufeffhi".encode("utf-32")]
    cases = [(sample.hex(), charset) for sample in samples for charset in CHARSETS]
    cases += [("日本語 text".encode(codec).hex(), name) for name, codec in VENDOR_CHARSETS.items()]
    ruby = run_ruby(RUBY_RULE, cases)
    mismatches = []
    for (hex_bytes, charset), expected in zip(cases, ruby, strict=True):
        payload = encode_body(bytes.fromhex(hex_bytes), f"text/plain; charset={charset}")
        assert payload is not None
        ours = None if payload.encoding == "binary" else [payload.charset, payload.value]
        if ours != expected:
            mismatches.append((hex_bytes, charset, expected, ours))
    assert mismatches == [], "\n".join(map(repr, mismatches))
