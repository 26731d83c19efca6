"""Executing one request payload over HTTP, as the gem's processor does (wire spec §3).

:func:`execute` sends a :class:`~patient_sidekiq.wire.request.Request` through an httpx
transport (normally a :class:`~patient_sidekiq.http.http_transport.ShardedTransport`), follows
redirects and returns what the callback job carries: a :class:`Response`, or a
:class:`RequestError`, :class:`HttpError` or redirect error. It never raises for a failed
request; only cancellation (``trio.Cancelled``) escapes. Through a ShardedTransport, requests
its own HTTP/1.1 and HTTP/2 transports carry skip building an ``httpx.Request`` (see
:func:`~patient_sidekiq.http.direct_route.direct_route`); the rest go through httpx.

Choices where the gem leaves room, documented once here:

* Every hop is a fresh task in the gem: its own timeout, its own ``x-request-id``
  (``<request_id>`` then ``<request_id>/2``, ``/3`` …), its own duration. Errors carry the
  hop's id as ``request_id`` (the gem's ``task.id``); a Response carries the original id.
* Redirect hops keep the request's headers (secret references are resolved again) but,
  as in the gem, not its ``secret_params``; a cross-origin hop also loses
  ``authorization``, ``cookie`` and the preprocessors.
* Response bodies are decoded from ``gzip``/``deflate`` and ``content-encoding`` is then
  dropped (the gem's AcceptEncoding wrapper does the same); the size limit applies to the
  decoded bytes, so a gzip bomb stops at ``max_response_size``. An empty body is ``None``.
* Repeated response headers are joined with ``", "``; ``set-cookie`` with ``"\\n"``
  (cookies may contain commas; Ruby's protocol-http joins them with newlines).

Touches no Redis keys.
"""

from __future__ import annotations

import inspect
import json
import os
import ssl
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import httpx
import trio

from patient_sidekiq.errors import PreprocessorNotFoundError, SecretNotFoundError
from patient_sidekiq.http.direct_route import direct_route
from patient_sidekiq.http.http1_transport import H11Transport
from patient_sidekiq.http.http2_transport import H2Transport
from patient_sidekiq.http.http_transport import (
    joined_fields,
    joined_raw_fields,
    read_stream,
    whole_body,
)
from patient_sidekiq.http.ruby_errors import ruby_error, ruby_error_type
from patient_sidekiq.http.settings import HttpSettings, OutgoingRequest
from patient_sidekiq.http.targets import DirectTarget
from patient_sidekiq.wire.failures import (
    HttpError,
    RecursiveRedirectError,
    RedirectError,
    RequestError,
    TooManyRedirectsError,
)
from patient_sidekiq.wire.headers import Headers, SecretRef
from patient_sidekiq.wire.payload import Payload
from patient_sidekiq.wire.request import (
    HeaderValue,
    Request,
    form_component,
    merge_query,
)
from patient_sidekiq.wire.response import Response

__all__ = [
    "ExecutionResult",
    "classify_error",
    "execute",
]

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_TO_GET: Final = frozenset({301, 302, 303})
_SENSITIVE_HEADERS: Final = ("authorization", "cookie")
_ACCEPT_ENCODING: Final = "gzip, identity"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

_SSL_ERRORS: Final = (ssl.SSLError, ssl.CertificateError)

ExecutionResult = Response | RequestError | HttpError | RedirectError


@dataclass(slots=True)  # not frozen: a frozen init costs a setattr call per field, per job
class _Hop:
    """One request of a redirect chain, as the gem's RequestTask holds it (never changed)."""

    method: str
    url: str
    headers: Headers[HeaderValue]
    body: Payload | None
    secret_params: Mapping[str, SecretRef]
    preprocessors: tuple[str, ...]
    task_id: str


@dataclass(slots=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes | None


async def execute(
    transport: httpx.AsyncBaseTransport,
    settings: HttpSettings,
    request: Request,
    *,
    request_id: str,
    callback_args: Mapping[str, Any] | None = None,
    raise_error_responses: bool | None = None,
    on_hop: Callable[[int, float], None] | None = None,
) -> ExecutionResult:
    """Run ``request`` with its redirects; return the result the callback job carries.

    ``on_hop(status, duration)`` is told of every redirect that is followed (the gem
    counts each hop as a finished request in its stats).
    """
    raise_errors = (
        settings.raise_error_responses if raise_error_responses is None else raise_error_responses
    )
    max_redirects = (
        settings.max_redirects if request.max_redirects is None else request.max_redirects
    )
    timeout = settings.request_timeout if request.timeout is None else request.timeout
    hop = _Hop(
        method=request.http_method,
        url=request.url,
        headers=request.headers,
        body=request.body,
        secret_params=request.secret_params,
        preprocessors=request.preprocessors,
        task_id=request_id,
    )
    redirects: list[str] = []
    while True:
        started = trio.current_time()
        try:
            answer = await _send(transport, settings, hop, timeout)
        except Exception as exc:
            return _request_error(exc, hop, trio.current_time() - started, callback_args)
        duration = round(trio.current_time() - started, 9)
        location = answer.headers.get("location", "")
        if answer.status in REDIRECT_STATUSES and max_redirects != 0 and location:
            target = _resolve(hop.url, location)
            visited = [*redirects, hop.url]
            common: dict[str, Any] = {
                "http_method": hop.method,
                "duration": duration,
                "request_id": hop.task_id,
                "redirects": visited,
                "callback_args": callback_args,
            }
            if len(redirects) >= max_redirects:
                return TooManyRedirectsError(url=location, **common)
            if target in visited:
                return RecursiveRedirectError(url=target, **common)
            if on_hop is not None:
                on_hop(answer.status, duration)
            hop = _redirected(hop, target, answer.status, f"{request_id}/{len(visited) + 1}")
            redirects = visited
            continue
        response = Response.build(
            status=answer.status,
            headers=answer.headers,
            body=answer.body,
            duration=duration,
            request_id=request_id,
            url=hop.url,
            http_method=hop.method,
            callback_args=callback_args,
            redirects=redirects,
        )
        if raise_errors and not response.success:
            return HttpError.for_response(response)
        return response


def classify_error(exc: BaseException, url: str = "") -> str:
    """Return the gem's ``error_type`` for an exception raised while executing a request."""
    return ruby_error_type(ruby_error(exc, url)[0])


def _package_path(filename: str) -> str:
    """``/…/site-packages/httpx/_client.py`` -> ``httpx/_client.py`` (also for ``src/``)."""
    for marker in ("/site-packages/", "/dist-packages/", "/src/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    return os.path.basename(filename)


def _request_error(
    exc: Exception, hop: _Hop, duration: float, callback_args: Mapping[str, Any] | None
) -> RequestError:
    # Ruby's frame format, innermost first; paths relative to the package root, so no
    # host directory (home, venv, container layout) reaches the Ruby side.
    backtrace = [
        f"{_package_path(frame.filename)}:{frame.lineno}:in `{frame.name}'"
        for frame in reversed(traceback.extract_tb(exc.__traceback__))
    ]
    class_name, message = ruby_error(exc, hop.url)
    return RequestError(
        class_name=class_name,
        message=message,
        backtrace=backtrace,
        error_type=ruby_error_type(class_name),
        duration=round(duration, 9),
        request_id=hop.task_id,
        url=hop.url,
        http_method=hop.method,
        callback_args=callback_args,
    )


async def _send(
    transport: httpx.AsyncBaseTransport, settings: HttpSettings, hop: _Hop, timeout: float
) -> _Answer:
    """Send one hop and read its whole body, all within ``timeout`` seconds."""
    # A bare CancelScope rather than trio.fail_after: the same deadline without the
    # generator-based context manager around it (per request, on the hot path).
    with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
        outgoing = await _prepare(settings, hop)
        connect = settings.connection_timeout if settings.connection_timeout else timeout
        route = direct_route(transport, outgoing)
        if route is not None and isinstance(carrier := route[0], H11Transport):
            # Reads and writes need no limit of their own: the deadline around this hop is
            # the same timeout, started earlier, so it always ends first.
            direct = await carrier.send(
                route[1],
                outgoing.method,
                outgoing.headers,
                outgoing.body,
                {"connect": connect},
            )
            status = direct.status
            framed = _framed(status, outgoing.method, http2=False)
            # (a response without a body is left unread below, as before: its connection
            # is closed, not pooled)
            whole = direct.stream.take_whole() if framed else None
            if whole is not None:  # the usual: no coroutine to read the body in
                try:
                    headers = joined_raw_fields(direct.headers)
                    body = whole_body(whole, headers, settings.max_response_size)
                finally:
                    direct.stream.close()
                return _answer(status, headers, body, framed)
            stream: httpx.AsyncByteStream = direct.stream
            close = stream.aclose
            raw: list[tuple[bytes, bytes]] | None = direct.headers
            http2 = False
        else:
            if route is None:
                timeouts = {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}
                url = httpx.URL(outgoing.url)
                request_fields = _fields(outgoing, url.scheme, url.netloc)
                response = await transport.handle_async_request(
                    _httpx_request(outgoing, url, request_fields, timeouts)
                )
            else:
                response = await _send_h2(route[0], route[1], outgoing, connect, timeout)
            status = response.status_code
            assert isinstance(response.stream, httpx.AsyncByteStream)
            stream = response.stream
            close = response.aclose
            raw = None
            fields = response.headers.multi_items()
            http2 = response.extensions.get("http_version") == b"HTTP/2"
            framed = _framed(status, outgoing.method, http2=http2)
        try:
            headers = joined_fields(fields) if raw is None else joined_raw_fields(raw)
            body = await read_stream(
                stream, headers, settings.max_response_size, framed=framed, http2=http2
            )
        finally:
            await close()
    if scope.cancelled_caught:
        raise trio.TooSlowError
    return _answer(status, headers, body, framed)


def _framed(status: int, method: str, *, http2: bool) -> bool:
    """Whether the response has a body to read. HTTP/1 (protocol-http1) has none for
    1xx/204/304/HEAD and keeps their framing headers; async-http's HTTP/2 always makes a
    body (maybe "") and drops them."""
    return http2 or (status >= 200 and status not in (204, 304) and method.lower() != "head")


def _answer(status: int, headers: dict[str, str], body: bytes | None, framed: bool) -> _Answer:
    if framed:
        # The gem's HTTP clients (protocol-http1 and async-http's HTTP/2) consume the
        # framing headers while reading a body: its callbacks never see them.
        headers.pop("content-length", None)
        headers.pop("transfer-encoding", None)
    return _Answer(status=status, headers=headers, body=body)


async def _send_h2(
    carrier: H11Transport | H2Transport,
    target: DirectTarget,
    outgoing: OutgoingRequest,
    connect: float,
    timeout: float,
) -> httpx.Response:
    """HTTP/2 of our own: the fields httpx would be given, without an httpx.Request."""
    assert isinstance(carrier, H2Transport)
    timeouts = {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}
    fields = _fields(outgoing, target.origin[0], target.host_header.encode("ascii"))
    return await carrier.send(
        target,
        outgoing.method,
        fields,
        outgoing.body,
        timeouts,
        lambda: _httpx_request(outgoing, httpx.URL(outgoing.url), fields, timeouts),
    )


def _fields(outgoing: OutgoingRequest, scheme: str, netloc: bytes) -> list[tuple[bytes, bytes]]:
    """The request's headers as httpx is given them (and the HTTP/2 direct path)."""
    # Values go out as their UTF-8 bytes, as Ruby writes a UTF-8 String (httpx would
    # refuse a str that is not ASCII).
    fields = [
        (name.encode("latin-1", "replace"), value.encode("utf-8", "surrogateescape"))
        for name, value in outgoing.headers.items()
    ]
    if outgoing.body is not None and "content-length" not in outgoing.headers:
        length = (b"content-length", str(len(outgoing.body)).encode())
        if scheme == "http":
            # plain HTTP is always HTTP/1.1: protocol-http1 writes the length last
            fields.append(length)
        else:
            # async-http's HTTP/2 client sends the length before every other header
            # (an https request is HTTP/2 whenever the server offers it)
            fields.insert(0, length)
    if "host" not in outgoing.headers:
        fields.insert(0, (b"host", netloc))  # lowercase, first: the gem's
    return fields


def _httpx_request(
    outgoing: OutgoingRequest,
    url: httpx.URL,
    fields: list[tuple[bytes, bytes]],
    timeouts: dict[str, float],
) -> httpx.Request:
    return httpx.Request(
        outgoing.method.upper(),
        url,
        headers=fields,
        content=outgoing.body,
        extensions={"timeout": timeouts},
    )


async def _prepare(settings: HttpSettings, hop: _Hop) -> OutgoingRequest:
    """Resolve secrets, add the send-time headers and run the preprocessors."""
    headers: dict[str, str] = {}
    for name, value in hop.headers.items():
        if isinstance(value, SecretRef):
            headers[name] = await _secret(settings, value.name)
        else:
            headers[name] = value
    headers["x-request-id"] = hop.task_id
    if settings.user_agent and "user-agent" not in headers:
        headers["user-agent"] = settings.user_agent
    url = hop.url
    if hop.secret_params:
        pairs = [
            f"{form_component(name)}={form_component(await _secret(settings, ref.name))}"
            for name, ref in hop.secret_params.items()
        ]
        url = merge_query(url, "&".join(pairs))
    outgoing = OutgoingRequest(
        method=hop.method,
        url=url,
        headers=headers,
        body=hop.body.raw if hop.body is not None else None,
    )
    for name in hop.preprocessors:
        preprocessor = settings.preprocessors.get(name)
        if preprocessor is None:
            raise PreprocessorNotFoundError(f"No preprocessor registered for {json.dumps(name)}")
        outcome = preprocessor(outgoing)
        if inspect.isawaitable(outcome):
            await outcome
    # The gem's HTTP client adds it when sending, after the preprocessors: it comes after
    # their headers on the wire, and they never see it.
    outgoing.headers.setdefault("accept-encoding", _ACCEPT_ENCODING)
    return outgoing


async def _secret(settings: HttpSettings, name: str) -> str:
    if name not in settings.secrets:
        raise SecretNotFoundError(f"No secret registered for {json.dumps(name)}")
    registered = settings.secrets[name]
    if not callable(registered):
        return registered
    # called at each resolution, as the gem calls a registered block
    value: object = registered(name)
    if inspect.isawaitable(value):
        value = await value
    # The gem sends `value.to_s`; a callable returning nothing sends an empty value.
    return "" if value is None else str(value)


def _redirected(hop: _Hop, target: str, status: int, task_id: str) -> _Hop:
    cross_origin = _origin(hop.url) != _origin(target)
    return _Hop(
        method="get" if status in _TO_GET else hop.method,
        url=target,
        headers=hop.headers.without(*_SENSITIVE_HEADERS) if cross_origin else hop.headers,
        body=None if status in _TO_GET else hop.body,
        secret_params={},
        preprocessors=() if cross_origin else hop.preprocessors,
        task_id=task_id,
    )


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS.get(scheme)


def _resolve(base: str, location: str) -> str:
    """An absolute location as given; a relative one resolved against the current URL."""
    if urlsplit(location).scheme:
        return location
    return urljoin(base, location)
