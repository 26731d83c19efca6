"""Start a real Ruby ``sidekiq`` server (6.4, from Debian) on the test Redis.

The server boots ``ruby_interop/sidekiq_boot.rb`` (a test stand-in defining
``Interop::RecordingJob``) and works the queue ``pyjobs`` with two threads.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import redis

from tests.support.programs import require_binary

BOOT_FILE = Path(__file__).resolve().parents[2] / "ruby_interop" / "sidekiq_boot.rb"
QUEUE = "pyjobs"
PERFORMED = "interop:performed"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


class SidekiqServer:
    """A running server: its process and its combined stdout/stderr so far."""

    def __init__(self, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self.process = process
        self._log = log

    def output(self) -> str:
        """Return the tail of the server's log (for failure messages)."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-4000:]


@contextlib.contextmanager
def sidekiq_server(redis_url: str) -> Iterator[SidekiqServer]:
    """Run ``sidekiq -r sidekiq_boot.rb -q pyjobs -c 2`` until the block ends.

    Returns once the server's process is registered in ``processes``; on exit sends TERM
    and waits (SIGKILL after 15 s). The server's output is shown if it fails to start.
    """
    binary = require_binary("sidekiq")  # Debian ruby-sidekiq: /usr/bin/sidekiq
    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("REDIS_PROVIDER", None)  # would take precedence over REDIS_URL in Sidekiq 6.4
    with tempfile.TemporaryFile(prefix="sidekiq-interop-", suffix=".log") as log:
        process = subprocess.Popen(
            [binary, "-r", str(BOOT_FILE), "-q", QUEUE, "-c", "2"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=BOOT_FILE.parent,
        )
        server = SidekiqServer(process, log)
        try:
            _wait_until_registered(server, redis_url)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=STOP_TIMEOUT)


def _wait_until_registered(server: SidekiqServer, redis_url: str) -> None:
    process = server.process
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            for member in client.smembers("processes"):
                # Sidekiq identities are "<hostname>:<pid>:<nonce>".
                if member.decode().split(":")[1:2] == [str(process.pid)]:
                    return
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"sidekiq did not register in 'processes' (exit code {process.poll()}):\n"
                    + server.output()
                )
            time.sleep(0.05)
    finally:
        client.close()


def performed(client: redis.Redis, count: int, timeout: float = 20.0) -> list[bytes]:
    """Wait until ``interop:performed`` holds ``count`` records; return them (bounded poll)."""
    deadline = time.monotonic() + timeout
    while True:
        records: list[bytes] = client.lrange(PERFORMED, 0, -1)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)
