"""HTTP bodies as the gem stores them inside requests and responses (wire spec §2.1).

On the wire a body is ``{"encoding": "text"|"gzipped"|"binary", "value": …, "charset": …}``:

* content-types the gem calls text are converted to UTF-8 where the declared charset
  allows, kept as a JSON string below 4096 bytes, gzipped (base64) from 4096 bytes on
  when that is smaller;
* everything else is strict base64 of the raw bytes with charset ``ASCII-8BIT``.

:func:`encode_body` writes exactly what Ruby's ``Payload.encode`` writes, gzip header
included (Ruby stamps the current time into it; tests inject the clock). A loaded
:class:`Payload` keeps the wire fields verbatim so that dumping it again gives Ruby's text
unchanged.

Reading differs from Ruby on purpose: the gem re-applies the content-type's charset to
text that is already UTF-8, so a ``latin1`` body reaches a Ruby callback as mojibake
(``cafÃ©``). :attr:`Payload.text` returns the correct text (``café``).

Where Ruby cannot write a text body at all (bytes that are invalid in the declared
charset, which make Ruby's JSON generator raise), we write it as binary instead of
failing the request: a Ruby reader still receives the original bytes. The same happens
for the few charsets Ruby knows and Python does not (EUC-TW, CESU-8 …). Python's and
Ruby's tables for Big5 and Windows-31J disagree on some vendor-defined byte sequences;
common text converts identically.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import struct
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

from patient_sidekiq.errors import WireFormatError
from patient_sidekiq.ruby.charsets import BINARY, UTF_8, charset_of, is_text_mimetype, python_codec
from patient_sidekiq.ruby.ruby_encodings_data import RUBY_DUMMY_ENCODINGS

__all__ = ["GZIP_THRESHOLD", "Payload", "encode_body"]

GZIP_THRESHOLD: Final = 4096
"""Text bodies of this many bytes or more are gzipped when that makes them smaller."""

Encoding = Literal["text", "gzipped", "binary"]
_ENCODINGS: Final = frozenset({"text", "gzipped", "binary"})


@dataclass(frozen=True, slots=True)
class Payload:
    """One body in wire form: ``encoding``, ``value`` and ``charset`` exactly as stored."""

    encoding: Encoding
    value: str
    charset: str | None

    @classmethod
    def from_wire(cls, data: object) -> Payload | None:
        """Load a wire body; ``None`` or a body whose value is null means no body."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise WireFormatError(f"body must be an object or null, got {type(data).__name__}")
        value = data.get("value")
        if value is None:
            return None
        encoding = data.get("encoding")
        charset = data.get("charset")
        if encoding not in _ENCODINGS:
            raise WireFormatError(f"body encoding must be text, gzipped or binary: {encoding!r}")
        if not isinstance(value, str):
            raise WireFormatError(f"body value must be a string, got {type(value).__name__}")
        if charset is not None and not isinstance(charset, str):
            raise WireFormatError(f"body charset must be a string, got {type(charset).__name__}")
        return cls(encoding, value, charset)

    def to_wire(self) -> dict[str, Any]:
        """Return the wire object in the gem's key order."""
        return {"encoding": self.encoding, "value": self.value, "charset": self.charset}

    @property
    def raw(self) -> bytes:
        """The body's bytes: UTF-8 for text (as the processor sends them), decoded otherwise."""
        if self.encoding == "text":
            return self.value.encode("utf-8", "surrogatepass")
        try:
            decoded = base64.b64decode(self.value)  # lenient like Ruby: newlines are ignored
        except (binascii.Error, ValueError) as exc:
            raise WireFormatError(f"{self.encoding} body is not base64: {exc}") from exc
        if self.encoding == "binary":
            return decoded
        try:
            return zlib.decompress(decoded, wbits=31)
        except zlib.error as exc:
            raise WireFormatError(f"gzipped body does not gunzip: {exc}") from exc

    @property
    def text(self) -> str:
        """The body as text, decoded with its charset (replacement characters for bad bytes)."""
        if self.encoding == "text":
            return self.value
        raw = self.raw
        codec = python_codec(self.charset) if self.charset else None
        return raw.decode(codec or "utf-8", "replace")


def _ruby_gzip(data: bytes, mtime: int) -> bytes:
    # Zlib.gzip: default level and memLevel, raw deflate, header with mtime, no name, OS=3.
    compressor = zlib.compressobj(-1, zlib.DEFLATED, -15, 8)
    deflated = compressor.compress(data) + compressor.flush()
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", mtime & 0xFFFFFFFF) + b"\x00\x03"
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + deflated + trailer


_BOMS: Final = {
    "UTF-16": (codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE),
    "UTF-32": (codecs.BOM_UTF32_BE, codecs.BOM_UTF32_LE),
}


def _converter(raw: bytes, charset: str) -> str | None:
    """Return the Python codec matching Ruby's converter for these bytes, or None."""
    if charset in _BOMS:
        # Ruby's dummy UTF-16/UTF-32 convert only when a byte order mark says how.
        if not raw or raw.startswith(_BOMS[charset]):
            return charset.lower()
        return None
    return python_codec(charset)


def _as_utf8_text(raw: bytes, charset: str) -> tuple[str, str] | None:
    """Return (text, charset label) as Ruby would store them, or None if Ruby could not."""
    if charset == UTF_8:
        return _utf8_or_none(raw, UTF_8)
    codec = _converter(raw, charset)
    if codec is not None:
        try:
            return raw.decode(codec), UTF_8
        except UnicodeDecodeError:
            pass
    elif charset not in RUBY_DUMMY_ENCODINGS and charset not in _BOMS:
        if raw.isascii():
            return raw.decode("ascii"), UTF_8
        if charset != BINARY:
            # A Ruby encoding Python cannot decode: Ruby would convert it and we cannot
            # match its text, so the caller stores binary rather than different text.
            return None
    # Ruby keeps the label when conversion fails, and its JSON generator then writes the
    # bytes as UTF-8 (or raises when they are not UTF-8).
    return _utf8_or_none(raw, charset)


def _utf8_or_none(raw: bytes, label: str) -> tuple[str, str] | None:
    try:
        return raw.decode("utf-8"), label
    except UnicodeDecodeError:
        return None


@lru_cache(maxsize=256)
def _text_charset(content_type: str | None) -> str | None:
    """The charset a body of this content-type is stored as text in, or None for binary.

    Cached: a worker sees few distinct content-types, and the two regex searches cost more
    than the lookup (the cache is bounded, whatever the servers send).
    """
    return charset_of(content_type) if is_text_mimetype(content_type) else None


def encode_body(
    body: bytes | None,
    content_type: str | None,
    *,
    clock: Callable[[], float] = time.time,
) -> Payload | None:
    """Encode raw body bytes the way the gem's ``Payload.encode`` does.

    ``clock`` supplies the gzip header's timestamp (Ruby uses the current time).
    """
    if body is None:
        return None
    text_charset = _text_charset(content_type)
    if text_charset is not None:
        converted = _as_utf8_text(body, text_charset)
        if converted is not None:
            text, charset = converted
            # UTF-8 takes at most 4 bytes a character: shorter text cannot reach the threshold.
            if len(text) * 4 >= GZIP_THRESHOLD and len(data := text.encode()) >= GZIP_THRESHOLD:
                gzipped = _ruby_gzip(data, int(clock()))
                if len(gzipped) < len(data):
                    return Payload("gzipped", base64.b64encode(gzipped).decode("ascii"), charset)
            return Payload("text", text, charset)
    return Payload("binary", base64.b64encode(body).decode("ascii"), BINARY)
