"""Shared fixtures: a real redis-server per test session, flushed between tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

# The byte-exact vectors made by the real Ruby classes (the gem's bin/golden.rb), kept in the
# repository so a clone tests without ../shared; tests/interop/test_golden_oracle.py checks them
# against the real gem and scripts/refresh_golden regenerates them. Every test reads them here.
GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "golden.json"


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front whether the real gem takes part (interop and differential tests)."""
    from tests.oracle import oracle_root

    root = oracle_root()
    if root is not None:
        return f"real gem: patient_http-sidekiq 1.0.1 in Sidekiq 7.3.10 from {root}"
    ci = " (CI: those tests fail)" if os.environ.get("CI") else ""
    return f"real gem: NOT BUILT, the tests that need it skip{ci}; scripts/test builds it"


def load_golden() -> dict[str, Any]:
    """A fresh copy of the golden vectors (for module-level parametrisation; tests take the
    ``golden`` fixture)."""
    with GOLDEN_PATH.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def free_port() -> int:
    """Return a loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    """Return the path of a program scripts/setup installs; fail under CI, else skip."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class RedisServer:
    """A private redis-server on a free loopback port (and a unix socket), no persistence.

    Tests that need to kill and restart Redis use their own (``private_redis``); ``start``
    after ``kill`` brings it back on the same port. ``persistent``: append-only file with
    ``appendfsync always`` in ``directory``, so a restart (after SIGTERM or SIGKILL) keeps
    every write Redis acknowledged (``persistent_redis``).
    """

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.persistent = persistent
        self.directory = directory
        self.unix_socket = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--unixsocket", str(self.unix_socket),
                "--dir", str(self.directory),
                "--save", "",
                *(
                    ("--appendonly", "yes", "--appendfsync", "always")
                    if self.persistent
                    else ("--appendonly", "no")
                ),
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM the server (a persistent one writes its data and exits)."""
        self.stop()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole session."""
    with tempfile.TemporaryDirectory(prefix="patient-sidekiq-redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


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


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    """The byte-exact vectors produced by the real Ruby classes (tests/golden/golden.json)."""
    return load_golden()
