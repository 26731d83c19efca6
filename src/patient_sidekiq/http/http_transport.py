"""ShardedTransport: the worker's one transport, routing each request to the client that
carries it best; K independent httpx connection pools for what only httpx can carry.

* HTTP/1.1 without a proxy: plain ``http`` (protocol ``auto`` or ``http1``) and ``https``
  with protocol ``http1`` go to one shared
  :class:`~patient_sidekiq.http.http1_transport.H11Transport` (our own HTTP/1.1 over trio,
  per-origin keep-alive; a fraction of httpcore's CPU per request).
* HTTP/2 without a proxy: ``https`` in ``auto`` (ALPN) and ``http2``, and h2c (``http``
  with ``http2``) go to one shared
  :class:`~patient_sidekiq.http.http2_transport.H2Transport` (h2 over trio, one reader
  task per connection): httpcore's HTTP/2 made every stream of a connection wait on one
  read lock (+45 ms per request at moderate load) and cost ~1 ms of CPU per request more.
  In ``auto`` an origin whose ALPN picks HTTP/1.1 is sent on to the H11Transport. Its
  connection tasks run in the nursery given to the constructor (the worker's), else as
  trio system tasks.
* Proxied requests (``settings.proxy_url``) stay on the httpx shards below.

One httpcore pool holding hundreds of connections spends most of its CPU on pool
bookkeeping (it scans every connection per request, and polls every idle socket), and an
HTTP/2 pool never opens a second connection to an origin past its 100-stream cap (both
measured before this module was written). So proxied requests go through K small pools:

* HTTP/1.1 (``auto``, ``http1``): K = ceil(max_connections / 4);
  HTTP/2 only: K = ceil(max_connections / 100) (at most 2,048 either way). Each pool stays
  small because httpcore's per-request pool scan grows with its connections (5,000 2-second
  requests took 1.5 times longer with 64 pools of 79). HTTP/2 keeps httpcore's 100 streams
  per connection: fewer streams cut the wait of streams on one another's reads (+45 ms per
  request at 300 req/s with 100, none with 8) but cost a TLS handshake per 8-20 requests,
  which made the 5,000-request fan-out slower (8.0 s with 20 instead of 6.7 s).
  Each pool gets ``Limits(max_connections=M, max_keepalive_connections=M)`` with
  M = ceil(max_connections / K); keep-alive equal to the maximum avoids httpcore's
  connection churn (it compares keep-alive against the total).
* Routing: an origin's home shard is ``hash((scheme, host, port)) % K``, so keep-alive
  connections to that origin are reused. When the home shard already has M requests in
  flight the request spills to another shard with a free slot, so one
  origin with many concurrent requests spreads over several shards instead of queueing in
  one pool; if every shard is full it goes to the least busy one (httpcore then queues
  it until the request's pool timeout). Spill-over scanning resumes where the previous
  one stopped, so finding a free shard stays cheap with thousands of shards. A shard's
  in-flight count is released when the response is closed.

No cookie jar and no AsyncClient layers: callers build an ``httpx.Request`` and call
:meth:`ShardedTransport.handle_async_request` directly, then :func:`read_stream` reads the
body back (gzip/deflate decoded, bounded by ``max_response_size``). Touches no Redis keys.
"""

from __future__ import annotations

import contextlib
import math
import re
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Final

import httpx
import trio

from patient_sidekiq.errors import ResponseTooLargeError
from patient_sidekiq.http.http1_transport import H11Transport
from patient_sidekiq.http.http2_transport import H2Transport
from patient_sidekiq.http.settings import HttpSettings, ssl_context_for
from patient_sidekiq.http.targets import DirectTarget, direct_target

__all__ = [
    "MAX_SHARDS",
    "ResponseTooLargeError",
    "ShardedTransport",
    "decoded_fields",
    "joined_fields",
    "joined_raw_fields",
    "read_stream",
    "whole_body",
]

MAX_SHARDS: Final = 2048
_HTTP1_PER_SHARD: Final = 4
_HTTP2_PER_SHARD: Final = 100


class _ReleasingStream(httpx.AsyncByteStream):
    """A response stream that gives its shard slot back once, when closed."""

    def __init__(self, inner: httpx.AsyncByteStream, release: _Release) -> None:
        self._inner = inner
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._release()


class _Release:
    def __init__(self, transport: ShardedTransport, shard: int) -> None:
        self._transport = transport
        self._shard = shard
        self._done = False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._transport._in_flight[self._shard] -= 1


class ShardedTransport(httpx.AsyncBaseTransport):
    """K independent ``httpx.AsyncHTTPTransport`` pools, chosen per origin (see module doc)."""

    def __init__(self, settings: HttpSettings, *, nursery: trio.Nursery | None = None) -> None:
        per_shard_target = _HTTP2_PER_SHARD if settings.protocol == "http2" else _HTTP1_PER_SHARD
        total = max(1, settings.max_connections)
        self.shard_count: int = min(MAX_SHARDS, max(1, math.ceil(total / per_shard_target)))
        self.per_shard: int = max(1, math.ceil(total / self.shard_count))
        limits = httpx.Limits(
            max_connections=self.per_shard, max_keepalive_connections=self.per_shard
        )
        context = ssl_context_for(settings)
        http1 = settings.protocol != "http2"
        http2 = settings.protocol != "http1"
        self._shards = [
            httpx.AsyncHTTPTransport(
                verify=context,
                http1=http1,
                http2=http2,
                limits=limits,
                proxy=settings.proxy_url,
                retries=settings.retries,
            )
            for _ in range(self.shard_count)
        ]
        self._in_flight = [0] * self.shard_count
        self._spill = 0  # where the last spill-over scan found room
        # HTTP/1.1 without a proxy skips httpx's pools: plain http unless HTTP/2 only, and
        # https when pinned to HTTP/1.1 (in "auto" ALPN may pick h2, which stays on httpx).
        self._h11: H11Transport | None = None
        self._h11_https = False
        if settings.proxy_url is None and settings.protocol != "http2":
            self._h11 = H11Transport(settings)
            self._h11_https = settings.protocol == "http1"
        # HTTP/2 without a proxy: https unless pinned to HTTP/1.1 (in "auto" an origin whose
        # ALPN picks HTTP/1.1 goes on to the HTTP/1.1 transport), and h2c when pinned to it.
        self._h2: H2Transport | None = None
        self._h2_plain = settings.protocol == "http2"
        if settings.proxy_url is None and settings.protocol != "http1":
            self._h2 = H2Transport(settings, http1=self._h11, nursery=nursery)

    def in_flight(self) -> tuple[int, ...]:
        """Requests currently holding a slot, per shard (a snapshot)."""
        return tuple(self._in_flight)

    def choose_shard(self, url: httpx.URL) -> int:
        """Return the shard for a request to ``url``: home shard, else the next with room."""
        count = self.shard_count
        in_flight = self._in_flight
        home = hash((url.scheme, url.host, url.port)) % count
        if in_flight[home] < self.per_shard:
            return home
        start = self._spill
        for step in range(count):
            index = (start + step) % count
            if in_flight[index] < self.per_shard:
                self._spill = index
                return index
        return min(range(count), key=lambda i: (in_flight[i], (i - home) % count))

    def direct(self, url: str) -> tuple[H11Transport | H2Transport, DirectTarget] | None:
        """The transport (ours, HTTP/1.1 or HTTP/2) and target for ``url`` when it can skip
        ``httpx.Request``; None when the request goes through httpx (a proxy, an odd URL)."""
        if self._h11 is None and self._h2 is None:
            return None
        target = direct_target(url)
        if target is None:
            return None
        scheme = target.origin[0]
        if self._h11 is not None and self._h11_carries(scheme):
            return self._h11, target
        if self._h2 is not None and (scheme == "https" or self._h2_plain):
            return self._h2, target
        return None

    def _h11_carries(self, scheme: str) -> bool:
        """Whether requests of ``scheme`` go to the HTTP/1.1 transport (when there is one)."""
        return scheme == "http" or (scheme == "https" and self._h11_https)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through one shard; the slot is released when the response closes.

        HTTP/1.1 requests that :class:`H11Transport` can carry go there instead, and HTTP/2
        ones (no proxy) to :class:`H2Transport`.
        """
        scheme = request.url.scheme
        h11_transport = self._h11
        if h11_transport is not None and self._h11_carries(scheme):
            return await h11_transport.handle_async_request(request)
        h2_transport = self._h2
        if h2_transport is not None and (scheme == "https" or self._h2_plain):
            return await h2_transport.handle_async_request(request)
        index = self.choose_shard(request.url)
        self._in_flight[index] += 1
        release = _Release(self, index)
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(stream, release)
        return response

    async def aclose(self) -> None:
        """Close every shard's connections, the HTTP/2 ones, and the HTTP/1.1 idle ones."""
        if self._h2 is not None:
            await self._h2.aclose()
        if self._h11 is not None:
            await self._h11.aclose()
        for shard in self._shards:
            await shard.aclose()


def decoded_fields(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Raw header fields as ``httpx.Headers`` decodes them: every name and value as ASCII,
    else all as UTF-8, else all as ISO-8859-1 (names come lowercase from the parser)."""
    for encoding in ("ascii", "utf-8"):
        try:
            return [(name.decode(encoding), value.decode(encoding)) for name, value in raw]
        except UnicodeDecodeError:
            continue
    return [(name.decode("iso-8859-1"), value.decode("iso-8859-1")) for name, value in raw]


def joined_fields(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The response headers as the gem's callbacks see them (Ruby protocol-http 0.23's rules).

    Names are lowercase. A header the gem keeps once takes its last value (``content-type``,
    ``location``, ``etag`` …); cookies and authentication challenges are joined with a
    newline; ``authorization`` repeats are concatenated; every other header is split on
    commas and joined again with ``", "`` (a single one too, so ``p ,q`` reads ``p, q``).
    ``connection``, ``cache-control`` and ``vary`` are lowercased; ``upgrade`` is dropped.
    """
    values: dict[str, list[str]] = {}
    for name, value in fields:
        values.setdefault(name, []).append(value)
    joined: dict[str, str] = {}
    for name, items in values.items():
        if name in _DROPPED_HEADERS:
            continue
        if name in _LAST_WINS:
            text = items[-1]
        elif name in _NEWLINE_JOINED:
            text = "\n".join(items)
        elif name in _CONCATENATED:
            text = "".join(items)
        elif len(items) == 1 and "," not in items[0]:
            text = items[0]  # what the split and join below give, without the regex
        else:
            text = ", ".join(part for item in items for part in _split_commas(item))
        joined[name] = text.lower() if name in _LOWERCASED else text
    return joined


def joined_raw_fields(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """``joined_fields(decoded_fields(raw))`` in one pass for the usual response: ASCII
    fields, each name once (anything else takes those two)."""
    joined: dict[str, str] = {}
    try:
        for name, value in raw:
            key = name.decode("ascii")
            if key in joined or key in _DROPPED_HEADERS:
                return joined_fields(decoded_fields(raw))
            text = value.decode("ascii")
            if key in _KEPT_WHOLE:
                joined[key] = text
                continue
            # The split and join below change nothing when every comma is followed by one
            # space and more, with no blank before it (a Date's "Fri, 04 Dec"): not worth
            # a regex split per response. (printable ASCII: the only blank is the space)
            if "," in text and not (
                text.count(",") == text.count(", ")
                and " ," not in text
                and ",  " not in text
                and not text.endswith(", ")
                and text.isprintable()
            ):
                text = ", ".join(_split_commas(text))
            joined[key] = text.lower() if key in _LOWERCASED else text
    except UnicodeDecodeError:
        return joined_fields(decoded_fields(raw))
    return joined


def _split_commas(value: str) -> list[str]:
    # Ruby's String#split(/\s*,\s*/): trailing empty pieces are dropped, inner ones kept.
    parts = _COMMA.split(value)
    while parts and not parts[-1]:
        parts.pop()
    return parts


_COMMA: Final = re.compile(r"\s*,\s*")
_LAST_WINS: Final = frozenset(
    {
        "content-type", "content-disposition", "content-length", "user-agent", "referer",
        "host", "if-modified-since", "if-unmodified-since", "from", "location",
        "max-forwards", "etag",
    }
)  # fmt: skip
_NEWLINE_JOINED: Final = frozenset(
    {"set-cookie", "cookie", "www-authenticate", "proxy-authenticate"}
)
_CONCATENATED: Final = frozenset({"authorization", "proxy-authorization"})
_LOWERCASED: Final = frozenset({"connection", "cache-control", "vary"})
_DROPPED_HEADERS: Final = frozenset({"upgrade"})
# what joined_fields keeps as it is when the header comes once
_KEPT_WHOLE: Final = _LAST_WINS | _NEWLINE_JOINED | _CONCATENATED


async def read_stream(
    stream: httpx.AsyncByteStream,
    headers: dict[str, str],
    limit: int,
    *,
    framed: bool = True,
    http2: bool = False,
) -> bytes | None:
    """Read a body stream, decoding gzip/deflate, failing as soon as it exceeds ``limit``.

    None where the gem's client yields no body: a response without one (``framed`` false:
    1xx, 204, 304, HEAD) or with ``content-length: 0``; an empty chunked or close-delimited
    body is ``b""``, and so is every empty HTTP/2 body (``http2``). Once a body has bytes,
    ``content-encoding`` goes from ``headers`` whatever the coding, as the gem's
    AcceptEncoding wrapper removes it.
    """
    if not framed:
        return None
    declared, encoding = _declared(headers, limit)
    decoder = _Decoder(encoding) if encoding is not None else None
    iterator = aiter(stream)
    try:
        body = await _collect(iterator, decoder, limit)
    except ResponseTooLargeError:
        await _unwind(iterator)
        raise
    return _finished(body, headers, declared, http2=http2)


def whole_body(
    data: bytes, headers: dict[str, str], limit: int, *, framed: bool = True
) -> bytes | None:
    """What :func:`read_stream` gives for an HTTP/1.1 body that is all in ``data`` already
    (a stream of that one chunk), without a coroutine."""
    if not framed:
        return None
    declared, encoding = _declared(headers, limit)
    body = b"".join(_Decoder(encoding).feed(data, limit + 1)) if encoding is not None else data
    if len(body) > limit:
        raise ResponseTooLargeError(limit)
    return _finished(body, headers, declared, http2=False)


def _declared(headers: dict[str, str], limit: int) -> tuple[int | None, str | None]:
    """The declared length (refused past ``limit``) and the coding to decode, if any."""
    declared = _leading_int(headers.get("content-length", ""))
    if declared is not None and declared > limit:
        raise ResponseTooLargeError(limit)
    encoding = headers.get("content-encoding", "").strip().lower()
    return declared, encoding if encoding in ("gzip", "x-gzip", "deflate") else None


def _finished(
    body: bytes, headers: dict[str, str], declared: int | None, *, http2: bool
) -> bytes | None:
    # The gem's AcceptEncoding wrapper drops content-encoding once a body has bytes, and
    # its HTTP/1 client yields no body for an empty one of declared length.
    if body and "content-encoding" in headers:
        del headers["content-encoding"]
    if not body and declared is not None and not http2:
        return None
    return body


async def _collect(iterator: AsyncIterator[bytes], decoder: _Decoder | None, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for raw in iterator:
        pieces = decoder.feed(raw, limit - total + 1) if decoder is not None else [raw]
        for piece in pieces:
            total += len(piece)
            if total > limit:
                raise ResponseTooLargeError(limit)
            chunks.append(piece)
    return b"".join(chunks)


async def _unwind(iterator: AsyncIterator[bytes]) -> None:
    """Finish a half-read stream: a chain of async generators in httpx and httpcore.

    ``aclose()`` would stop only the outermost generator and leave the inner ones to the
    garbage collector (a ResourceWarning from trio). Resuming the chain inside a cancelled
    scope makes the innermost read raise Cancelled, which ends every generator on its way
    out, and httpcore closes the connection as it goes.
    """
    with trio.CancelScope() as scope:
        scope.cancel()
        with contextlib.suppress(Exception):
            while True:
                await anext(iterator)


class _Decoder:
    """Incremental gzip/deflate decoder that never inflates more than it is asked for."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding != "deflate"
        self._zlib = zlib.decompressobj(wbits=47 if self._gzip else 15)
        self._raw_deflate_checked = self._gzip

    def feed(self, data: bytes, budget: int) -> list[bytes]:
        if not self._raw_deflate_checked:
            # "deflate" is meant to be zlib-wrapped, but some servers send raw deflate.
            self._raw_deflate_checked = True
            if data and (data[0] & 0x0F) != 8:
                self._zlib = zlib.decompressobj(wbits=-15)
        out: list[bytes] = []
        produced = 0
        while data and produced <= budget:
            piece = self._zlib.decompress(data, max(1, budget - produced + 1))
            produced += len(piece)
            out.append(piece)
            data = self._zlib.unconsumed_tail
            if self._zlib.eof:
                break
        return out


def _leading_int(text: str) -> int | None:
    if text.isascii() and text.isdigit():  # the usual content-length: no loop
        return int(text)
    digits = ""
    for char in text.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None
