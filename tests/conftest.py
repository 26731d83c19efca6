"""Fixtures every test may take: Redis, the golden vectors, the local HTTP servers.

The helpers behind them are in ``tests/support/`` (shared with the benchmarks): a real
redis-server per test session (flushed between tests) and private ones to kill and restart;
hypercorn servers in the test's own trio loop. The S3 and PostgreSQL servers are plugins of
the modules that need them (``pytest_plugins = ["tests.support.s3"]``,
``["tests.support.postgres"]``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from tests.support.golden import load_golden
from tests.support.http import Server, TlsCerts, generate_certs, reset_handler, start_hypercorn
from tests.support.oracle import oracle_root
from tests.support.redis import RedisServer, running_redis


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front whether the real gem takes part (interop and differential tests)."""
    root = oracle_root()
    if root is not None:
        return f"real gem: patient_http-sidekiq 1.0.1 in Sidekiq 7.3.10 from {root}"
    ci = " (CI: those tests fail)" if os.environ.get("CI") else ""
    return f"real gem: NOT BUILT, the tests that need it skip{ci}; scripts/test builds it"


# --- Redis ---


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole session."""
    with (
        tempfile.TemporaryDirectory(prefix="patient-sidekiq-redis-") as directory,
        running_redis(Path(directory)) as server,
    ):
        yield server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to be killed and restarted."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private append-only redis-server (``appendfsync always``), to stop and restart."""
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain synchronous client for test assertions (never used by the code under test)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def bridge(redis_url: str) -> AsyncIterator[RedisBridge]:
    """The code under test's own connection to the session's (emptied) redis-server."""
    async with RedisBridge(redis_url) as bridge:
        yield bridge


# --- golden vectors ---


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    """The byte-exact vectors produced by the real Ruby classes (tests/golden/golden.json)."""
    return load_golden()


# --- local HTTP servers (tests/support/http.py) ---


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TlsCerts:
    """A CA and a server certificate for 127.0.0.1/localhost, generated once per session."""
    return generate_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def http_server(nursery: trio.Nursery) -> Server:
    """hypercorn over plain HTTP/1.1."""
    return await start_hypercorn(nursery)


@pytest.fixture
async def tls_server(nursery: trio.Nursery, tls_certs: TlsCerts) -> Server:
    """hypercorn over TLS (ALPN h2 and http/1.1), certificate signed by ``tls_certs``."""
    return await start_hypercorn(nursery, tls_certs)


@pytest.fixture
async def reset_server(nursery: trio.Nursery) -> Server:
    """A raw TCP server that answers every request with a connection reset."""
    listeners = await nursery.start(partial(trio.serve_tcp, reset_handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return Server("http", int(port))
