"""The one corner of Ruby's Marshal format that encrypted payloads use: a single string.

ActiveSupport's ``MessageEncryptor`` serializes its plaintext with ``Marshal.dump`` by
default, and patient_http hands it the payload's JSON *text*, so the plaintext is always
one marshalled ``String``. Writing reproduces Ruby's bytes exactly (a UTF-8 string:
``04 08 I " <len> <bytes> 06 : 06 E T``); reading also takes the two other shapes Ruby
writes for strings without non-ASCII content (US-ASCII ``E false``, and binary strings
without the encoding ivar). Any other Marshal object is refused: loading arbitrary
Marshal data is neither needed nor safe.
"""

from __future__ import annotations

from patient_sidekiq.errors import PlaintextFormatError

__all__ = ["marshal_dump_string", "marshal_load_string"]

_VERSION = b"\x04\x08"
_IVAR = 0x49  # "I": the object that follows carries instance variables
_STRING = 0x22  # '"'
_SYMBOL = 0x3A  # ":"
_ENCODING_FLAG = b"E"  # ivar :E, true = UTF-8, false = US-ASCII
_TRUE = 0x54  # "T"
_FALSE = 0x46  # "F"
_MAX_LONG = 2**31 - 1  # Ruby's w_long refuses anything wider ("long too big to dump")


def _dump_long(value: int) -> bytes:
    # Marshal's w_long for non-negative values: 0, then small values offset by 5 in one
    # byte, then a byte count followed by that many little-endian bytes.
    if value == 0:
        return b"\x00"
    if value < 123:
        return bytes([value + 5])
    size = (value.bit_length() + 7) // 8
    return bytes([size]) + value.to_bytes(size, "little")


def marshal_dump_string(text: str) -> bytes:
    """Return ``Marshal.dump(text)`` for a UTF-8 Ruby string, byte for byte.

    Raises :class:`PlaintextFormatError` for text that Ruby could not hold (lone
    surrogates are not UTF-8) or that is longer than Marshal can describe.
    """
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PlaintextFormatError(f"text is not valid Unicode: {exc.reason}") from exc
    if len(data) > _MAX_LONG:
        raise PlaintextFormatError(f"text is {len(data)} bytes, too long for Marshal")
    return b"".join(
        (
            _VERSION,
            bytes([_IVAR, _STRING]),
            _dump_long(len(data)),
            data,
            b"\x06",  # one instance variable follows
            bytes([_SYMBOL]),
            _dump_long(len(_ENCODING_FLAG)),
            _ENCODING_FLAG,
            bytes([_TRUE]),
        )
    )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise PlaintextFormatError("Marshal data ends early (truncated?)")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def long(self) -> int:
        # Marshal's r_long; negative forms are read too so that the error can say so.
        first = int.from_bytes(self.take(1), "little", signed=True)
        if first == 0:
            return 0
        if first > 4:
            return first - 5
        if first < -4:
            return first + 5
        if first > 0:
            return int.from_bytes(self.take(first), "little")
        raw = int.from_bytes(self.take(-first), "little")
        return raw - (1 << (8 * -first))


def marshal_load_string(data: bytes) -> str:
    """Read a Marshal-dumped Ruby string and return it as text.

    Accepts UTF-8 strings (``E true``), US-ASCII strings (``E false``) and strings
    without an encoding ivar; the bytes must be UTF-8. Raises
    :class:`PlaintextFormatError` for anything else, including trailing bytes.
    """
    reader = _Reader(data)
    if reader.take(2) != _VERSION:
        raise PlaintextFormatError("not Marshal 4.8 data")
    tag = reader.byte()
    has_ivars = tag == _IVAR
    if has_ivars:
        tag = reader.byte()
    if tag != _STRING:
        raise PlaintextFormatError(f"Marshal object is type {chr(tag)!r}, expected a String")
    length = reader.long()
    if length < 0:
        raise PlaintextFormatError(f"Marshal string length is negative ({length})")
    raw = reader.take(length)
    if has_ivars:
        count = reader.long()
        if count != 1 or reader.byte() != _SYMBOL:
            raise PlaintextFormatError("Marshal string carries ivars other than its encoding")
        name = reader.take(reader.long())
        flag = reader.byte()
        if name != _ENCODING_FLAG or flag not in (_TRUE, _FALSE):
            raise PlaintextFormatError("Marshal string encoding is neither UTF-8 nor US-ASCII")
    if reader.pos != len(data):
        raise PlaintextFormatError(f"{len(data) - reader.pos} bytes follow the Marshal string")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlaintextFormatError(f"Marshal string is not UTF-8: {exc.reason}") from exc
