"""Fixtures for the HTTP client tests: real local servers (see ``tests/http_servers.py``).

Registered with ``pytest_plugins = ["tests.conftest_http"]`` by the test modules that use them.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from tests.http_servers import Server, TlsCerts, generate_certs, reset_handler, start_hypercorn


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
