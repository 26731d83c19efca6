"""Behaviour of http_client.execute and ShardedTransport against real local servers."""

from __future__ import annotations

import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from patient_sidekiq.http.direct_route import direct_route
from patient_sidekiq.http.http2_transport import H2Transport
from patient_sidekiq.http.http_client import ExecutionResult, classify_error, execute
from patient_sidekiq.http.http_transport import ShardedTransport
from patient_sidekiq.http.settings import HttpSettings, OutgoingRequest
from patient_sidekiq.wire.failures import (
    ClientError,
    HttpError,
    RecursiveRedirectError,
    RequestError,
    ServerError,
    TooManyRedirectsError,
)
from patient_sidekiq.wire.headers import SecretRef
from patient_sidekiq.wire.request import Request
from patient_sidekiq.wire.response import Response
from tests.support.http import Server, TlsCerts
from tests.support.programs import free_port

RID = "11111111-2222-4333-8444-555555555555"


def sign(request: OutgoingRequest) -> None:
    request.headers["x-signature"] = f"signed:{request.method}"
    request.add_query_param("sig", "a b")


SETTINGS = HttpSettings(
    retries=0,
    request_timeout=10.0,
    secrets={"token": "Bearer s3cret", "key": "k y&z"},
    preprocessors={"sign": sign},
)


@pytest.fixture
async def transport() -> AsyncIterator[ShardedTransport]:
    sharded = ShardedTransport(SETTINGS)
    yield sharded
    await sharded.aclose()


async def run(
    transport: httpx.AsyncBaseTransport,
    request: Request,
    settings: HttpSettings = SETTINGS,
    raise_error_responses: bool | None = None,
) -> ExecutionResult:
    return await execute(
        transport,
        settings,
        request,
        request_id=RID,
        callback_args={"k": 1},
        raise_error_responses=raise_error_responses,
    )


async def ok(transport: httpx.AsyncBaseTransport, request: Request, **kw: Any) -> Response:
    result = await run(transport, request, **kw)
    assert isinstance(result, Response), result
    return result


async def failed(transport: httpx.AsyncBaseTransport, request: Request, **kw: Any) -> RequestError:
    result = await run(transport, request, **kw)
    assert isinstance(result, RequestError), result
    return result


def echoed(response: Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    data["headers"] = dict(data["headers"])
    return data


# --- one request ---------------------------------------------------------------------------


async def test_get_sends_request_id_user_agent_and_accept_encoding(
    http_server: Server, transport: ShardedTransport
) -> None:
    url = http_server.url("/echo?a=1")
    response = await ok(transport, Request.build("get", url, headers={"x-custom": "v"}))
    echo = echoed(response)
    assert echo["method"] == "GET"
    assert echo["query"] == "a=1"
    assert echo["http_version"] == "1.1"
    assert echo["headers"]["x-request-id"] == RID
    assert echo["headers"]["user-agent"] == "PatientHttp"
    assert echo["headers"]["accept-encoding"] == "gzip, identity"
    assert echo["headers"]["x-custom"] == "v"
    assert response.status == 200
    assert response.url == url
    assert response.http_method == "get"
    assert response.request_id == RID
    assert response.redirects == ()
    assert response.callback_args_data == {"k": 1}
    assert response.duration is not None
    assert 0 < response.duration < 5
    assert response.headers["content-type"] == "application/json"


async def test_user_agent_from_request_or_settings(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build("get", http_server.url("/echo"), headers={"User-Agent": "mine/1"})
    assert echoed(await ok(transport, request))["headers"]["user-agent"] == "mine/1"
    settings = dataclasses.replace(SETTINGS, user_agent="Configured/2")
    response = await ok(
        transport, Request.build("get", http_server.url("/echo")), settings=settings
    )
    assert echoed(response)["headers"]["user-agent"] == "Configured/2"


async def test_post_sends_body(http_server: Server, transport: ShardedTransport) -> None:
    request = Request.build("post", http_server.url("/echo"), json={"a": "é"})
    echo = echoed(await ok(transport, request))
    assert echo["method"] == "POST"
    assert echo["body"].encode("latin-1").decode() == '{"a":"é"}'
    assert echo["headers"]["content-type"] == "application/json; charset=utf-8"


async def test_non_ascii_header_values_go_out_as_utf8_with_a_lowercase_host_first(
    http_server: Server, transport: ShardedTransport
) -> None:
    # Ruby writes a UTF-8 header value's bytes; httpx alone would refuse the str.
    request = Request.build("get", http_server.url("/echo"), headers={"X-Name": "héllo ☃"})
    echo = await ok(transport, request)
    sent = echo.json()["headers"]
    assert sent[0] == ["host", f"127.0.0.1:{http_server.port}"]
    assert dict(sent)["x-name"].encode("latin-1").decode() == "héllo ☃"


@pytest.mark.parametrize("status", [201, 404, 500])
async def test_every_status_is_a_response_by_default(
    http_server: Server, transport: ShardedTransport, status: int
) -> None:
    response = await ok(transport, Request.build("get", http_server.url(f"/status/{status}")))
    assert response.status == status


async def test_raise_error_responses(http_server: Server, transport: ShardedTransport) -> None:
    not_found = Request.build("get", http_server.url("/status/404"))
    failure = await run(transport, not_found, raise_error_responses=True)
    assert isinstance(failure, ClientError)
    assert failure.message == f"HTTP 404 response from GET {not_found.url}"
    assert failure.response.request_id == RID
    raising = dataclasses.replace(SETTINGS, raise_error_responses=True)
    server_error = Request.build("get", http_server.url("/status/503"))
    assert isinstance(await run(transport, server_error, settings=raising), ServerError)
    assert isinstance(
        await run(transport, server_error, settings=raising, raise_error_responses=False), Response
    )
    created = Request.build("get", http_server.url("/status/201"))
    assert isinstance(await run(transport, created, raise_error_responses=True), Response)


async def test_headers_lowercase_and_repeated_ones_joined(
    http_server: Server, transport: ShardedTransport
) -> None:
    response = await ok(transport, Request.build("get", http_server.url("/multi")))
    assert response.headers["set-cookie"] == "a=1; Path=/\nb=2; Path=/"
    assert response.headers["x-multi"] == "one, two"
    assert all(name == name.lower() for name in response.headers)


async def test_gzip_and_deflate_are_decoded(
    http_server: Server, transport: ShardedTransport
) -> None:
    response = await ok(transport, Request.build("get", http_server.url("/gzip")))
    assert response.json() == {"gzipped": True}
    assert "content-encoding" not in response.headers
    response = await ok(transport, Request.build("get", http_server.url("/deflate")))
    assert response.body == "deflated text"


async def test_latin1_body_decoded_with_its_charset(
    http_server: Server, transport: ShardedTransport
) -> None:
    response = await ok(transport, Request.build("get", http_server.url("/charset")))
    assert response.body == "café"


async def test_empty_body_is_none(http_server: Server, transport: ShardedTransport) -> None:
    response = await ok(transport, Request.build("get", http_server.url("/status/204")))
    assert response.status == 204
    assert response.payload is None


# --- secrets and preprocessors -------------------------------------------------------------


async def test_secrets_resolved_into_headers_and_query(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build(
        "get",
        http_server.url("/echo"),
        headers={"authorization": SecretRef("token")},
        params={"a": 1, "api_key": SecretRef("key")},
    )
    response = await ok(transport, request)
    echo = echoed(response)
    assert echo["headers"]["authorization"] == "Bearer s3cret"
    assert echo["query"] == "a=1&api_key=k+y%26z"
    assert response.url == http_server.url("/echo?a=1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"headers": {"x-key": SecretRef("missing")}}, 'No secret registered for "missing"'),
        ({"params": {"p": SecretRef("missing")}}, 'No secret registered for "missing"'),
        ({"preprocessors": ["nope"]}, 'No preprocessor registered for "nope"'),
    ],
)
async def test_unknown_secret_or_preprocessor_is_unknown_error(
    http_server: Server, transport: ShardedTransport, kwargs: dict[str, Any], message: str
) -> None:
    error = await failed(transport, Request.build("get", http_server.url("/echo"), **kwargs))
    assert error.error_type == "unknown"
    assert error.message == message
    assert error.request_id == RID
    assert error.callback_args_data == {"k": 1}
    assert "s3cret" not in json.dumps(error.to_wire())


async def test_preprocessor_signs_request(http_server: Server, transport: ShardedTransport) -> None:
    request = Request.build("post", http_server.url("/echo?x=1"), body="b", preprocessors=["sign"])
    echo = echoed(await ok(transport, request))
    assert echo["headers"]["x-signature"] == "signed:post"
    assert echo["query"] == "x=1&sig=a+b"


async def test_callable_secrets_are_called_at_each_use_sync_or_async(
    http_server: Server, transport: ShardedTransport
) -> None:
    calls: list[str] = []

    def rotating(name: str) -> str:
        calls.append(name)
        return f"token-{len(calls)}"

    async def fetched(name: str) -> str:
        await trio.lowlevel.checkpoint()
        return f"async-{name}"

    settings = dataclasses.replace(SETTINGS, secrets={"rot": rotating, "remote": fetched})
    request = Request.build(
        "get",
        http_server.url("/echo"),
        headers={"authorization": SecretRef("rot")},
        params={"k": SecretRef("remote")},
    )
    first = echoed(await ok(transport, request, settings=settings))
    second = echoed(await ok(transport, request, settings=settings))
    assert (first["headers"]["authorization"], second["headers"]["authorization"]) == (
        "token-1",
        "token-2",
    )
    assert first["query"] == "k=async-remote"
    assert calls == ["rot", "rot"]


async def test_preprocessors_run_in_order_after_the_send_time_headers(
    http_server: Server, transport: ShardedTransport
) -> None:
    seen: list[str] = []

    def first(request: OutgoingRequest) -> None:
        # secrets resolved and x-request-id set before any preprocessor runs
        seen.append(f"{request.headers['authorization']}|{request.headers['x-request-id']}")
        request.headers["x-order"] = "first"

    async def second(request: OutgoingRequest) -> None:
        await trio.lowlevel.checkpoint()
        request.headers["x-order"] += ",second"
        request.add_query_param("async", True)

    settings = dataclasses.replace(SETTINGS, preprocessors={"first": first, "second": second})
    request = Request.build(
        "get",
        http_server.url("/echo"),
        headers={"authorization": SecretRef("token")},
        preprocessors=["first", "second"],
    )
    echo = echoed(await ok(transport, request, settings=settings))
    assert echo["headers"]["x-order"] == "first,second"
    assert echo["query"] == "async=true"
    assert seen == [f"Bearer s3cret|{RID}"]


async def test_failing_preprocessor_is_unknown_error(
    http_server: Server, transport: ShardedTransport
) -> None:
    def broken(request: OutgoingRequest) -> None:
        raise KeyError("boom")

    settings = dataclasses.replace(SETTINGS, preprocessors={"broken": broken})
    request = Request.build("get", http_server.url("/echo"), preprocessors=["broken"])
    error = await failed(transport, request, settings=settings)
    assert error.error_type == "unknown"
    assert error.class_name == "KeyError"
    # Ruby-style frames, innermost first, without the host's directories
    assert error.backtrace[0].startswith("test_http_client.py:")
    assert error.backtrace[0].endswith(":in `broken'")
    assert not any(line.startswith("/") for line in error.backtrace)


# --- redirects -----------------------------------------------------------------------------


async def test_relative_redirect_chain(http_server: Server, transport: ShardedTransport) -> None:
    response = await ok(transport, Request.build("get", http_server.url("/redirect/3")))
    assert response.url == http_server.url("/redirect/0")
    assert response.redirects == tuple(http_server.url(f"/redirect/{n}") for n in (3, 2, 1))
    assert response.request_id == RID
    assert echoed(response)["headers"]["x-request-id"] == f"{RID}/4"


async def test_each_hop_has_its_own_task_id(
    http_server: Server, transport: ShardedTransport
) -> None:
    second = http_server.url("/redirect-to?url=/echo")
    first = http_server.url(f"/redirect-to?url={quote(second, safe='')}")
    response = await ok(transport, Request.build("get", first))
    assert echoed(response)["headers"]["x-request-id"] == f"{RID}/3"
    assert response.redirects == (first, second)


@pytest.mark.parametrize(("status", "method"), [(301, "GET"), (302, "GET"), (303, "GET")])
async def test_301_302_303_turn_into_get_without_body(
    http_server: Server, transport: ShardedTransport, status: int, method: str
) -> None:
    request = Request.build(
        "post", http_server.url(f"/redirect-to?url=/echo&status={status}"), body="payload"
    )
    response = await ok(transport, request)
    echo = echoed(response)
    assert echo["method"] == method
    assert echo["body"] == ""
    assert response.http_method == "get"


@pytest.mark.parametrize("status", [307, 308])
async def test_307_308_keep_method_and_body(
    http_server: Server, transport: ShardedTransport, status: int
) -> None:
    request = Request.build(
        "put", http_server.url(f"/redirect-to?url=/echo&status={status}"), body="payload"
    )
    response = await ok(transport, request)
    echo = echoed(response)
    assert (echo["method"], echo["body"]) == ("PUT", "payload")
    assert response.http_method == "put"


async def test_redirects_not_followed_when_disabled_or_without_location(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build("get", http_server.url("/redirect/2"), max_redirects=0)
    response = await ok(transport, request)
    assert (response.status, response.headers["location"]) == (302, "/redirect/1")
    no_location = Request.build("get", http_server.url("/redirect-to?status=301"))
    assert (await ok(transport, no_location)).status == 301


async def test_too_many_redirects(http_server: Server, transport: ShardedTransport) -> None:
    request = Request.build("get", http_server.url("/redirect/10"), max_redirects=2)
    error = await run(transport, request)
    assert isinstance(error, TooManyRedirectsError)
    first = http_server.url("/redirect/10")
    assert error.message == f"Too many redirects (3) while requesting GET {first}"
    assert error.url == "/redirect/7"
    assert error.redirects == [http_server.url(f"/redirect/{n}") for n in (10, 9, 8)]
    assert error.request_id == f"{RID}/3"
    assert error.callback_args_data == {"k": 1}
    assert error.duration is not None


async def test_default_redirect_limit_from_settings(
    http_server: Server, transport: ShardedTransport
) -> None:
    error = await run(transport, Request.build("get", http_server.url("/redirect/6")))
    assert isinstance(error, TooManyRedirectsError)
    assert len(error.redirects) == 6
    assert isinstance(
        await run(transport, Request.build("get", http_server.url("/redirect/5"))), Response
    )


async def test_recursive_redirect(http_server: Server, transport: ShardedTransport) -> None:
    error = await run(transport, Request.build("get", http_server.url("/loop")))
    assert isinstance(error, RecursiveRedirectError)
    loop = http_server.url("/loop")
    assert (
        error.message
        == f"Recursive redirect detected: {loop} was already visited in redirect chain"
    )
    assert error.url == loop
    assert error.redirects == [loop, http_server.url("/loop/b")]
    assert error.request_id == f"{RID}/2"


async def test_cross_origin_redirect_strips_credentials_and_preprocessors(
    http_server: Server, transport: ShardedTransport
) -> None:
    target = http_server.url("/echo", host="localhost")
    request = Request.build(
        "get",
        http_server.url(f"/redirect-to?url={quote(target, safe='')}"),
        headers={"authorization": SecretRef("token"), "cookie": "c=1", "x-other": "kept"},
        preprocessors=["sign"],
    )
    response = await ok(transport, request)
    headers = echoed(response)["headers"]
    assert "authorization" not in headers
    assert "cookie" not in headers
    assert "x-signature" not in headers
    assert headers["x-other"] == "kept"
    assert echoed(response)["query"] == ""
    assert response.url == target


async def test_same_origin_redirect_keeps_credentials_and_preprocessors(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build(
        "get",
        http_server.url("/redirect-to?url=/echo"),
        headers={"authorization": SecretRef("token"), "cookie": "c=1"},
        preprocessors=["sign"],
    )
    headers = echoed(await ok(transport, request))["headers"]
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["cookie"] == "c=1"
    assert headers["x-signature"] == "signed:get"


async def test_final_hop_duration_only(http_server: Server, transport: ShardedTransport) -> None:
    slow = http_server.url("/slow?seconds=0.5")
    request = Request.build("get", http_server.url(f"/redirect-to?url={quote(slow, safe='')}"))
    response = await ok(transport, request)
    assert response.duration is not None
    assert 0.45 < response.duration < 2
    fast = Request.build("get", http_server.url(f"/redirect-to?url={quote('/echo', safe='')}"))
    response = await ok(transport, fast)
    assert response.duration is not None
    assert response.duration < 0.45


# --- failures ------------------------------------------------------------------------------


async def test_timeout_waiting_for_headers(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build("get", http_server.url("/slow?seconds=5"), timeout=0.3)
    error = await failed(transport, request)
    assert error.error_type == "timeout"
    assert error.duration is not None
    assert 0.25 < error.duration < 2
    assert error.url == request.url
    assert error.http_method == "get"


async def test_timeout_covers_reading_the_body(
    http_server: Server, transport: ShardedTransport
) -> None:
    settings = dataclasses.replace(SETTINGS, request_timeout=0.3)
    request = Request.build("get", http_server.url("/slow-body?seconds=5"))
    assert (await failed(transport, request, settings=settings)).error_type == "timeout"


async def test_connection_refused(transport: ShardedTransport) -> None:
    request = Request.build("get", f"http://127.0.0.1:{free_port()}/echo")
    error = await failed(transport, request)
    assert error.error_type == "connection"
    # Ruby's name for the system error, as the gem reports it.
    assert error.class_name == "Errno::ECONNREFUSED"
    assert error.message.startswith("Connection refused - ")


async def test_connection_reset(reset_server: Server, transport: ShardedTransport) -> None:
    error = await failed(transport, Request.build("get", reset_server.url("/anything")))
    assert error.error_type == "connection"


async def test_connection_dropped_mid_body(
    http_server: Server, transport: ShardedTransport
) -> None:
    error = await failed(transport, Request.build("get", http_server.url("/reset")))
    assert error.error_type == "connection"


async def test_unresolvable_host_is_connection_error(transport: ShardedTransport) -> None:
    request = Request.build("get", "http://no-such-host.invalid/")
    assert (await failed(transport, request)).error_type == "connection"


async def test_tls_without_the_ca_is_ssl_error(tls_server: Server) -> None:
    sharded = ShardedTransport(SETTINGS)
    try:
        error = await failed(sharded, Request.build("get", tls_server.url("/echo")))
    finally:
        await sharded.aclose()
    assert error.error_type == "ssl"
    assert error.class_name == "OpenSSL::SSL::SSLError"
    # Ruby's OpenSSL wording, as the gem reports it
    assert error.message == (
        f"SSL_connect returned=1 errno=0 peeraddr=127.0.0.1:{tls_server.port} state=error: "
        "certificate verify failed (unable to get local issuer certificate)"
    )


@pytest.mark.parametrize("length", ["1", "0"])
async def test_body_within_limit(
    http_server: Server, transport: ShardedTransport, length: str
) -> None:
    request = Request.build("get", http_server.url(f"/big?bytes=200000&length={length}"))
    settings = dataclasses.replace(SETTINGS, max_response_size=200_000)
    response = await ok(transport, request, settings=settings)
    assert response.payload is not None
    assert len(response.payload.raw) == 200_000


async def test_content_length_over_limit_fails_at_once(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build("get", http_server.url("/big?bytes=2000000&length=1"))
    error = await failed(transport, request)
    assert error.error_type == "response_too_large"
    # the gem meets the limit while streaming: its message never states the body's size
    assert error.class_name == "PatientHttp::ResponseTooLargeError"
    assert error.message == "Response body size exceeded maximum allowed size (1048576 bytes)"


async def test_streamed_body_over_limit_fails_while_reading(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build("get", http_server.url("/big?bytes=2000000&length=0"))
    error = await failed(transport, request)
    assert error.error_type == "response_too_large"
    assert error.message == "Response body size exceeded maximum allowed size (1048576 bytes)"


async def test_decoded_size_counts_against_the_limit(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build("get", http_server.url("/gzip?bytes=5000000"))
    assert (await failed(transport, request)).error_type == "response_too_large"


def test_classify_error() -> None:
    assert classify_error(trio.TooSlowError()) == "timeout"
    assert classify_error(httpx.ReadTimeout("x")) == "timeout"
    assert classify_error(httpx.PoolTimeout("x")) == "timeout"
    assert classify_error(ConnectionResetError()) == "connection"
    assert classify_error(BrokenPipeError()) == "connection"
    disconnected = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert classify_error(disconnected) == "connection"  # EOFError, an IOError in Ruby
    assert classify_error(httpx.RemoteProtocolError("x")) == "unknown"  # a parse error
    assert classify_error(ssl.SSLError("bad")) == "ssl"
    assert classify_error(ValueError("x")) == "unknown"
    assert classify_error(httpx.UnsupportedProtocol("x")) == "unknown"


# --- HTTP/2 over TLS -----------------------------------------------------------------------


@pytest.fixture
async def h2_transport(tls_certs: TlsCerts) -> AsyncIterator[ShardedTransport]:
    settings = dataclasses.replace(SETTINGS, ca_bundle=str(tls_certs.ca_file), protocol="http2")
    sharded = ShardedTransport(settings)
    yield sharded
    await sharded.aclose()


async def test_http2_get_and_post(tls_server: Server, h2_transport: ShardedTransport) -> None:
    response = await ok(h2_transport, Request.build("get", tls_server.url("/echo")))
    echo = echoed(response)
    assert echo["http_version"] == "2"
    assert echo["headers"]["x-request-id"] == RID
    request = Request.build("post", tls_server.url("/echo"), body="hello")
    echo = echoed(await ok(h2_transport, request))
    assert (echo["method"], echo["body"], echo["http_version"]) == ("POST", "hello", "2")


async def test_http2_redirect_and_gzip(tls_server: Server, h2_transport: ShardedTransport) -> None:
    response = await ok(h2_transport, Request.build("get", tls_server.url("/redirect/2")))
    assert echoed(response)["headers"]["x-request-id"] == f"{RID}/3"
    assert len(response.redirects) == 2
    response = await ok(h2_transport, Request.build("get", tls_server.url("/gzip")))
    assert response.json() == {"gzipped": True}


async def test_http2_big_bodies(tls_server: Server, h2_transport: ShardedTransport) -> None:
    fits = Request.build("get", tls_server.url("/big?bytes=300000&length=0"))
    response = await ok(h2_transport, fits)
    assert response.payload is not None
    assert len(response.payload.raw) == 300_000
    for length in ("0", "1"):
        too_big = Request.build("get", tls_server.url(f"/big?bytes=2000000&length={length}"))
        assert (await failed(h2_transport, too_big)).error_type == "response_too_large"


async def test_auto_protocol_negotiates_http2_over_tls(
    tls_server: Server, tls_certs: TlsCerts
) -> None:
    sharded = ShardedTransport(dataclasses.replace(SETTINGS, ca_bundle=str(tls_certs.ca_file)))
    try:
        response = await ok(
            sharded, Request.build("get", tls_server.url("/echo", host="localhost"))
        )
    finally:
        await sharded.aclose()
    assert echoed(response)["http_version"] == "2"


# --- the sharded transport -----------------------------------------------------------------


def test_shard_sizing() -> None:
    default = ShardedTransport(HttpSettings())
    assert (default.shard_count, default.per_shard) == (64, 4)
    small = ShardedTransport(HttpSettings(max_connections=10))
    assert (small.shard_count, small.per_shard) == (3, 4)
    huge = ShardedTransport(HttpSettings(max_connections=5000))
    assert (huge.shard_count, huge.per_shard) == (1250, 4)
    capped = ShardedTransport(HttpSettings(max_connections=20_000))
    assert (capped.shard_count, capped.per_shard) == (2048, 10)
    h2 = ShardedTransport(HttpSettings(protocol="http2"))
    assert (h2.shard_count, h2.per_shard) == (3, 86)


def test_busy_home_shard_spills_to_a_free_one() -> None:
    sharded = ShardedTransport(HttpSettings(max_connections=12))
    url = httpx.URL("http://example.com/")
    home = sharded.choose_shard(url)
    sharded._in_flight[home] = sharded.per_shard
    spilled = sharded.choose_shard(url)
    assert spilled != home
    sharded._in_flight = [sharded.per_shard] * sharded.shard_count
    sharded._in_flight[(home + 2) % 3] -= 1
    assert sharded.choose_shard(url) == (home + 2) % 3
    sharded._in_flight[(home + 2) % 3] += 1  # every shard full: the least busy one
    sharded._in_flight[(home + 1) % 3] += 1
    assert sharded.choose_shard(url) in {home, (home + 2) % 3}


async def test_thousand_concurrent_requests(http_server: Server) -> None:
    sharded = ShardedTransport(SETTINGS)
    results: list[ExecutionResult] = []

    async def one(n: int) -> None:
        request = Request.build("get", http_server.url(f"/status/200?n={n}"))
        results.append(await execute(sharded, SETTINGS, request, request_id=f"r{n}"))

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(1000):
                    nursery.start_soon(one, n)
    finally:
        await sharded.aclose()
    failures = [r for r in results if not isinstance(r, Response)]
    assert failures == []
    assert len(results) == 1000
    assert all(isinstance(r, Response) and r.status == 200 for r in results)
    assert sharded.in_flight() == (0,) * sharded.shard_count


async def test_unfollowed_redirect_is_an_http_error_when_raising(
    http_server: Server, transport: ShardedTransport
) -> None:
    request = Request.build("get", http_server.url("/redirect/1"), max_redirects=0)
    result = await run(transport, request, raise_error_responses=True)
    assert isinstance(result, HttpError)
    assert result.status == 302


async def test_secret_params_are_not_carried_over_redirects(
    http_server: Server, transport: ShardedTransport
) -> None:
    # As in the gem: a redirect hop is rebuilt from the URL, headers and body only.
    request = Request.build(
        "get", http_server.url("/redirect-to?url=/echo"), params={"api_key": SecretRef("key")}
    )
    assert echoed(await ok(transport, request))["query"] == ""


async def test_any_transport_and_the_piecewise_timeouts() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    settings = dataclasses.replace(SETTINGS, connection_timeout=1.5)
    request = Request.build("put", "http://example.test/x", body="b", timeout=7)
    response = await ok(httpx.MockTransport(handler), request, settings=settings)
    assert response.json() == {"ok": True}
    assert seen[0].extensions["timeout"] == {"connect": 1.5, "read": 7, "write": 7, "pool": 7}
    assert seen[0].content == b"b"


@pytest.mark.parametrize(
    ("url", "direct"),
    [
        ("https://api.test/a/b?x=1&y={z}", True),
        ("https://API.test:443", True),
        ("https://api.test/.well-known/x", False),  # httpx drops "." segments: "/." keeps it
        ("https://api.test/a/../b", False),
        ("https://api.test/x{y}", False),  # httpx percent-encodes these in a path
        ("https://api.test/x`y", False),
        ("https://api.test/p?a<b", False),  # and these in a query
        ("https://api.test/p?", False),  # httpx keeps the bare "?"
        ("https://api.test/" + "a" * 65536, False),  # httpx refuses it
    ],
)
async def test_http2_direct_path_only_for_urls_httpx_sends_unchanged(
    url: str, direct: bool
) -> None:
    sharded = ShardedTransport(HttpSettings(protocol="http2"))
    try:
        outgoing = OutgoingRequest(method="get", url=url, headers={}, body=None)
        route = direct_route(sharded, outgoing)
        assert (route is not None) == direct
        if route is not None:
            assert isinstance(route[0], H2Transport)
            assert route[1].path == httpx.URL(url).raw_path.decode()  # what httpx sent
    finally:
        await sharded.aclose()
