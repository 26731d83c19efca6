"""A private redis-server on a free loopback port: the tests' fixtures and the benchmarks.

The fixtures (``redis_server``, ``private_redis``, ``persistent_redis`` in tests/conftest.py)
and scripts/bench_fetch.py and scripts/bench_pipeline.py start their servers here.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.support.http import TlsCerts
from tests.support.programs import free_port, require_binary, stop_process


class RedisServer:
    """A private redis-server on a free loopback port (and a unix socket), no persistence.

    Tests that need to kill and restart Redis use their own (``private_redis``); ``start``
    after ``kill`` brings it back on the same port. ``persistent``: append-only file with
    ``appendfsync always`` in ``directory``, so a restart (after SIGTERM or SIGKILL) keeps
    every write Redis acknowledged (``persistent_redis``). ``binary``: the program to run
    (default: redis-server on PATH, the test skipping, or failing under CI, without it).
    """

    def __init__(
        self,
        directory: Path,
        *,
        persistent: bool = False,
        binary: str | None = None,
        tls: TlsCerts | None = None,
    ) -> None:
        self.port = free_port()
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        self.persistent = persistent
        self.directory = directory
        self.binary = binary
        self.unix_socket = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        """The TLS port's URL (``tls`` given), trusting the test CA."""
        assert self.tls is not None
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.tls.ca_file}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        binary = self.binary or require_binary("redis-server")
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
                *(
                    (
                        "--tls-port", str(self.tls_port),
                        "--tls-cert-file", str(self.tls.cert_file),
                        "--tls-key-file", str(self.tls.key_file),
                        "--tls-ca-cert-file", str(self.tls.ca_file),
                        "--tls-auth-clients", "no",
                    )
                    if self.tls is not None
                    else ()
                ),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM the server and reap it (SIGKILL if it takes over 10 s)."""
        stop_process(self.process)

    def terminate(self) -> None:
        """SIGTERM the server (a persistent one writes its data and exits)."""
        self.stop()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def running_redis(
    directory: Path,
    *,
    persistent: bool = False,
    binary: str | None = None,
    tls: TlsCerts | None = None,
) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped (SIGTERM) on exit."""
    server = RedisServer(directory, persistent=persistent, binary=binary, tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.stop()
