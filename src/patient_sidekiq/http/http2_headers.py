"""The request header block of :mod:`~patient_sidekiq.http.http2_transport`, and its HPACK.

:func:`request_headers` gives the fields httpcore and h2 sent for an ``httpx.Request``, and
:func:`header_block` the same from a request's parts (the direct path, no ``httpx.Request``;
the server sees the same list): ``:method``, ``:authority`` (the ``host`` header), ``:scheme``,
``:path``, then the others in the caller's order, names lowercased, names and values
trimmed, connection-specific fields dropped; a ``te`` other than ``trailers`` or a
pseudo-header of the caller's is httpx.LocalProtocolError with h2's wording. Checking here
rather than in h2 matters: h2 checks while its HPACK encoder runs, so a refused field
would leave the encoder's table out of step with the server's for every later request.

Both directions of HPACK are made cheap, since h2 and hpack run in Python (together ~a
quarter of the CPU per request before):

:class:`PlainEncoder` stands in for hpack's encoder in h2: every field a literal without
indexing (or an exact match of the static table), no Huffman coding, and the dynamic table
set to size 0 in the first block. hpack's encoder searched its whole dynamic table for
every field and Huffman-coded each new value in Python (~10 % of the CPU per request); the
cost is a few hundred more bytes per request on the wire, against a TLS record each. The
fields h2 never indexed (``authorization``, ``proxy-authorization``, short cookies) go out
as never-indexed literals, as before: they are hpack's NeverIndexedHeaderTuple, the one kind
of field h2 hands on to the encoder as it was given (it rebuilds the others as plain tuples).

:class:`CachingDecoder` is hpack's decoder remembering what each header block decoded to.
The connection advertises ``SETTINGS_HEADER_TABLE_SIZE`` 0, so the server keeps nothing in
our dynamic table and a block means the same every time it comes: a server repeats the
same block for the same kind of response (nginx: status, server, content type, and a date
that changes once a second), which then costs a dictionary lookup instead of Huffman
decoding in Python. A block is only remembered when the table was empty before and after
it and it changes no table size; what is remembered is shared by all connections.

Touches no Redis keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import httpx
from hpack import Decoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable

__all__ = ["CachingDecoder", "PlainEncoder", "header_block", "request_headers"]

# RFC 9113 §8.2.2 connection-specific fields (h2 dropped them), and host (-> :authority)
_DROPPED: Final = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"host"}
)
_NEVER_INDEXED: Final = frozenset({b"authorization", b"proxy-authorization"})
_PSEUDO: Final = frozenset({b":method", b":authority", b":scheme", b":path"})


def request_headers(request: httpx.Request) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The header block for ``request`` (see module doc), and whether it has no body."""
    url = request.url
    return header_block(
        request.method.encode("ascii"), url.scheme, url.netloc, url.raw_path, request.headers.raw
    )


def header_block(
    method: bytes,
    scheme: str,
    netloc: bytes,
    path: bytes,
    fields: Iterable[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The header block of a request given by its parts (the direct path, without an
    ``httpx.Request``), and whether it has no body; a ``host`` field is the authority,
    else ``netloc``."""
    authority: bytes | None = None
    has_body = False
    regular: list[tuple[bytes, bytes]] = []
    for raw_name, raw_value in fields:
        name = raw_name.lower().strip()
        if name == b"content-length" or name == b"transfer-encoding":
            has_body = True
        if name in _DROPPED:
            if name == b"host" and authority is None:
                authority = raw_value.strip()
            continue
        value = raw_value.strip()
        if name[:1] == b":":  # after ours, as h2 words it
            if name in _PSEUDO:
                raise httpx.LocalProtocolError(f"Received duplicate pseudo-header field {name!r}")
            raise httpx.LocalProtocolError(
                f"Received pseudo-header field out of sequence: {name!r}"
            )
        if name == b"te" and value.lower() != b"trailers":
            raise httpx.LocalProtocolError(f"Invalid value for TE header: {value!r}")
        if name in _NEVER_INDEXED or (name == b"cookie" and len(value) < 20):
            regular.append(NeverIndexedHeaderTuple(name, value))
        else:
            regular.append((name, value))
    headers = [
        (b":method", method),
        (b":authority", authority if authority is not None else netloc),
        (b":scheme", scheme.encode("ascii")),
        (b":path", path),
    ]
    headers += regular
    return headers, not has_body


_STATIC: Final = HeaderTable.STATIC_TABLE
_EXACT: Final = {field: index for index, field in reversed(list(enumerate(_STATIC, 1)))}
_NAMES: Final = {name: index for index, (name, _) in reversed(list(enumerate(_STATIC, 1)))}
# Both caches are shared by every connection: without a dynamic table a field's bytes, and
# a block's fields, are the same on any of them. Bounded, emptied when full.
_CACHE_SIZE: Final = 1024
_ENCODED: dict[tuple[bytes, bytes], bytes] = {}  # field -> its representation
_DECODED: dict[bytes, list[HeaderTuple]] = {}  # block -> its fields
_UNIQUE: Final = frozenset({b"x-request-id"})  # new for each request: never cached


class PlainEncoder:
    """HPACK without compression, in h2's place of hpack's Encoder (see module doc)."""

    def __init__(self) -> None:
        self.header_table_size = 4096  # h2 sets the server's limit here; we never index
        self._started = False

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        parts: list[bytes] = []
        if not self._started:
            self._started = True
            parts.append(b"\x20")  # dynamic table size update: 0 (§6.3)
        cache = _ENCODED
        for field in headers:
            # hpack's own type: h2 rebuilds every field, keeping only HeaderTuple classes
            if type(field) is NeverIndexedHeaderTuple:
                parts.append(_field(field[0], field[1], True))
                continue
            encoded = cache.get(field)
            if encoded is None:
                encoded = _field(field[0], field[1], False)
                if field[0] not in _UNIQUE:
                    if len(cache) >= _CACHE_SIZE:
                        cache.clear()
                    cache[field] = encoded
            parts.append(encoded)
        return b"".join(parts)


def _field(name: bytes, value: bytes, sensitive: bool) -> bytes:
    """One field: indexed when the static table has it exactly (§6.1), else a literal
    without indexing (§6.2.2) or never indexed (§6.2.3), the name indexed when it can be."""
    if not sensitive:
        index = _EXACT.get((name, value))
        if index is not None:
            return _integer(index, 7, 0x80)
    first = 0x10 if sensitive else 0x00
    index = _NAMES.get(name)
    head = _integer(index, 4, first) if index else bytes((first,)) + _string(name)
    return head + _string(value)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0x00) + data  # H = 0: raw octets (§5.2)


def _integer(value: int, bits: int, first: int) -> bytes:
    """``value`` in an N-bit prefix (§5.1), ``first`` holding the representation's flags."""
    limit = (1 << bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class CachingDecoder(Decoder):
    """hpack's Decoder, remembering the header lists of blocks that need no table (see
    module doc)."""

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        dynamic = self.header_table.dynamic_entries
        key = bytes(data)
        cacheable = raw and not dynamic and bool(key) and key[0] & 0xE0 != 0x20
        if cacheable:
            known = _DECODED.get(key)
            if known is not None:
                return list(known)
        headers = list(super().decode(data, raw))
        if cacheable and not dynamic:
            if len(_DECODED) >= _CACHE_SIZE:
                _DECODED.clear()
            _DECODED[key] = headers[:]
        return headers
