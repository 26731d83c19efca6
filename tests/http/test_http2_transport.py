"""HTTP/2 through ShardedTransport against real servers: hypercorn and tests/support/h2_server.

The failure tests pin what the gem's callbacks see (Ruby class, error_type, message) for each
way an HTTP/2 exchange can break; they were written against the httpcore path and hold for
the transport of our own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
import trio

from patient_sidekiq.http.http_client import ExecutionResult, execute
from patient_sidekiq.http.http_transport import ShardedTransport
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.wire.failures import RequestError
from patient_sidekiq.wire.request import Request
from patient_sidekiq.wire.response import Response
from tests.support.h2_server import RawH2Server, start_raw_h2
from tests.support.http import Server, TlsCerts
from tests.support.programs import free_port

SETTINGS = HttpSettings(retries=0, request_timeout=10.0, max_response_size=100_000)
BAD_RESPONSE = "Protocol::HTTP1::BadResponse"


@pytest.fixture(params=["http2", "auto"])
async def h2_transport(
    request: pytest.FixtureRequest, tls_certs: TlsCerts
) -> AsyncIterator[ShardedTransport]:
    """The worker's transport over TLS, pinned to HTTP/2 or negotiating it (ALPN)."""
    settings = dataclasses.replace(
        SETTINGS, ca_bundle=str(tls_certs.ca_file), protocol=request.param
    )
    sharded = ShardedTransport(settings)
    yield sharded
    await sharded.aclose()


@pytest.fixture
async def raw_server(nursery: trio.Nursery, tls_certs: TlsCerts) -> RawH2Server:
    return await start_raw_h2(nursery, tls_certs)


async def run(
    transport: ShardedTransport, url: str, *, method: str = "get", timeout: float | None = None
) -> ExecutionResult:
    request = Request.build(method, url, timeout=timeout)
    return await execute(transport, SETTINGS, request, request_id="rid")


async def failure(
    transport: ShardedTransport, url: str, *, timeout: float | None = None
) -> tuple[str, str, str]:
    result = await run(transport, url, timeout=timeout)
    assert isinstance(result, RequestError), result
    return result.class_name, result.error_type, result.message


# --- failures as the gem's callbacks see them ------------------------------------------------


async def test_stream_reset_before_the_response(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    class_name, error_type, message = await failure(h2_transport, raw_server.url("/reset"))
    assert (class_name, error_type) == (BAD_RESPONSE, "unknown")
    assert message.startswith("<StreamReset stream_id:")
    assert "error_code:2" in message


async def test_stream_reset_mid_body(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    class_name, error_type, message = await failure(h2_transport, raw_server.url("/reset-mid-body"))
    assert (class_name, error_type) == (BAD_RESPONSE, "unknown")
    assert message.startswith("<StreamReset stream_id:")
    assert "remote_reset:True" in message


async def test_connection_closed_mid_body(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    found = await failure(h2_transport, raw_server.url("/drop-mid-body"))
    assert found == (BAD_RESPONSE, "unknown", "Server disconnected")


async def test_connection_reset_mid_body(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    found = await failure(h2_transport, raw_server.url("/abort-mid-body"))
    assert found == ("Errno::ECONNRESET", "connection", "Connection reset by peer")


async def test_goaway_with_an_error(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    found = await failure(h2_transport, raw_server.url("/goaway-error"))
    text = "<ConnectionTerminated error_code:2, last_stream_id:1, additional_data:None>"
    assert found == (BAD_RESPONSE, "unknown", text)


async def test_slow_response_times_out(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    found = await failure(h2_transport, raw_server.url("/slow?seconds=5"), timeout=0.5)
    assert found == ("Async::TimeoutError", "timeout", "execution expired")


async def test_slow_body_times_out(tls_server: Server, h2_transport: ShardedTransport) -> None:
    found = await failure(h2_transport, tls_server.url("/slow-body?seconds=5"), timeout=0.5)
    assert found == ("Async::TimeoutError", "timeout", "execution expired")


async def test_size_limit_while_streaming(
    raw_server: RawH2Server, h2_transport: ShardedTransport
) -> None:
    class_name, error_type, _ = await failure(h2_transport, raw_server.url("/big?bytes=300000"))
    assert (class_name, error_type) == ("PatientHttp::ResponseTooLargeError", "response_too_large")
    # the connection is still good for the next request
    assert isinstance(await run(h2_transport, raw_server.url("/echo")), Response)


async def test_connection_refused(h2_transport: ShardedTransport) -> None:
    port = free_port()
    class_name, error_type, message = await failure(h2_transport, f"https://127.0.0.1:{port}/x")
    assert (class_name, error_type) == ("Errno::ECONNREFUSED", "connection")
    assert message == f"Connection refused - connect(2) for 127.0.0.1:{port}"
