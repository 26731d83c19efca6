"""/metrics, /health, sd_notify and the request lines of a real ``patient-sidekiq run`` process
(worker/operations.py and the modules it ties together).

The worker runs as a process against a private redis-server (stopped mid-test) and requests
the test's own hypercorn server; systemd is played by a unix datagram socket in the
abstract namespace, read by a task of the test's trio loop.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
from prometheus_client.parser import text_string_to_metric_families

from patient_sidekiq.client.enqueue import Client
from tests.cli.test_cli_run import Proc, queue, worker
from tests.support.http import Server
from tests.support.programs import free_port
from tests.support.redis import RedisServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def value(scraped: Samples, name: str, **labels: str) -> float:
    """One sample of a scrape (``patient_sidekiq_`` + ``name``); 0 when absent."""
    return scraped.get((f"patient_sidekiq_{name}", frozenset(labels.items())), 0.0)


async def get(port: int, path: str) -> tuple[int, bytes]:
    """One GET to the worker's endpoint: status and body (the server closes after one)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def health(port: int) -> tuple[int, dict[str, Any]]:
    status, body = await get(port, "/health")
    return status, json.loads(body)


async def samples(port: int) -> Samples:
    status, body = await get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


class Systemd:
    """What a Type=notify unit's manager would receive, one datagram at a time, and from
    which process (the kernel's SCM_CREDENTIALS, as systemd's NotifyAccess reads them)."""

    def __init__(self) -> None:
        self.address = f"@patient-sidekiq-test-{os.getpid()}-{secrets.token_hex(4)}"
        self.messages: list[str] = []
        self.senders: set[int] = set()

    def count(self, line: str) -> int:
        return sum(line in message.split("\n") for message in self.messages)

    def said(self, prefix: str) -> list[str]:
        return [
            line
            for message in self.messages
            for line in message.split("\n")
            if line.startswith(prefix)
        ]

    async def listen(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            await sock.bind("\0" + self.address[1:])
            task_status.started()
            credentials = struct.calcsize("3i")  # pid, uid, gid
            while True:
                data, ancillary, _, _ = await sock.recvmsg(4096, socket.CMSG_SPACE(credentials))
                for level, kind, value in ancillary:
                    if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                        self.senders.add(struct.unpack("3i", value[:credentials])[0])
                self.messages.append(data.decode())


@pytest.fixture
async def systemd(nursery: trio.Nursery) -> AsyncIterator[Systemd]:
    manager = Systemd()
    await nursery.start(manager.listen)
    return manager


def until_gone(proc: Proc) -> Any:
    return lambda: proc.process.poll() is not None


async def test_metrics_health_and_notifications_follow_the_worker_and_redis(
    private_redis: RedisServer, http_server: Server, systemd: Systemd, tmp_path: Path
) -> None:
    port = free_port()
    args = ["--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--retries", "0"]
    args += ["-r", "tests.support.metrics_callbacks"]  # MetricsTest::Flaky: on_error raises
    env = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "400000"}  # WATCHDOG=1 per 0.2 s
    with worker(private_redis.url, tmp_path, *args, **env) as proc:
        await eventually(lambda: systemd.count("READY=1"), what="READY=1", detail=proc.tail)
        status, body = await health(port)
        assert (status, body["status"], body["state"], body["pid"]) == (
            200, "ok", "running", proc.process.pid,
        )  # fmt: skip
        assert systemd.said("STATUS=running: 0 of 256 requests in flight")
        assert body["capacity"] == 256
        assert body["quiet"] is False

        with Client(private_redis.url) as client:
            client.get(http_server.url("/status/200?token=hunter2&page=2"), callback="App::Done")
            client.get(
                http_server.url("/status/404"), callback="App::Done", raise_error_responses=True
            )
            client.get("http://127.0.0.1:1/refused", callback="App::Done")
            client.get(http_server.url("/status/204"), callback="MetricsTest::Flaky")
            client.get("http://127.0.0.1:1/flaky", callback="MetricsTest::Flaky")
        with redis.Redis.from_url(private_redis.url) as plain:
            await eventually(lambda: len(queue(plain, "default")) == 3,
                             what="three callback jobs", detail=proc.tail)  # fmt: skip

        with trio.fail_after(10):  # the Python callback jobs run after the requests
            while value(scraped := await samples(port), "python_callbacks_total") < 2:
                await trio.sleep(0.05)
        assert value(scraped, "python_callbacks_failed_total") == 1  # on_error raised
        requests = "requests_total"
        assert value(scraped, requests, status="200", error_type="", error="") == 1
        assert value(scraped, requests, status="204", error_type="", error="") == 1
        assert value(scraped, requests, status="404", error_type="http_error",
                     error="PatientHttp::ClientError") == 1  # fmt: skip
        assert value(scraped, requests, status="", error_type="connection",
                     error="Errno::ECONNREFUSED") == 2  # fmt: skip
        assert value(scraped, "request_duration_seconds_count", result="response") == 2
        assert value(scraped, "request_duration_seconds_count", result="error") == 3
        assert value(scraped, "callback_jobs_pushed_total", queue="default") == 3
        assert value(scraped, "callback_jobs_pushed_total", queue="patient_http_callbacks") == 2
        for connection in ("requests", "callbacks", "payloads"):
            assert value(scraped, "redis_round_trips_total", connection=connection) > 0
        assert value(scraped, "requests_in_flight") == 0
        assert value(scraped, "healthy") == 1

        log = proc.stderr
        [done] = [line for line in log.splitlines() if "request done" in line and "200?" in line]
        assert " INFO patient_sidekiq.worker.request_log: request done request_id=" in done
        assert (
            f"method=GET url={http_server.url('/status/200')}?token=[FILTERED]&page=[FILTERED] "
            "status=200 duration_ms=" in done
        )
        assert done.endswith(" queue=default")
        assert "hunter2" not in log
        [refused] = [line for line in log.splitlines() if "/refused" in line]
        assert "request failed" in refused
        assert "error=Errno::ECONNREFUSED error_type=connection" in refused
        assert "error_message=Connection refused" in refused
        await eventually(lambda: systemd.count("WATCHDOG=1") >= 3, what="watchdog pings")

        private_redis.kill()
        status, body = await eventually_health(port, 503, proc)
        assert body["status"] == "unavailable"
        assert body["reason"].startswith("Redis unreachable (")
        await eventually(lambda: systemd.said("STATUS=unhealthy: Redis unreachable"),
                         what="an unhealthy STATUS", detail=proc.tail)  # fmt: skip
        pings = systemd.count("WATCHDOG=1")
        await trio.sleep(1.0)  # five watchdog periods: an unhealthy worker must stay silent
        assert systemd.count("WATCHDOG=1") == pings
        assert value(await samples(port), "healthy") == 0

        private_redis.start()
        await eventually_health(port, 200, proc)
        await eventually(lambda: systemd.count("WATCHDOG=1") > pings, what="watchdog again")

        proc.signal(signal.SIGTERM)
        await eventually(lambda: systemd.count("STOPPING=1"), what="STOPPING=1", detail=proc.tail)
        await eventually(until_gone(proc), what="the worker to exit", detail=proc.tail)
        assert proc.process.returncode == 0
        assert systemd.count("READY=1") == 1
        assert systemd.count("STOPPING=1") == 1
        assert systemd.senders == {proc.process.pid}


async def eventually_health(port: int, wanted: int, proc: Proc) -> tuple[int, dict[str, Any]]:
    """Poll ``/health`` until it answers ``wanted`` (not listening yet counts as not yet)."""
    with trio.fail_after(15):
        while True:
            try:
                status, body = await health(port)
            except OSError:
                status, body = 0, {}
            if status == wanted:
                return status, body
            if proc.process.poll() is not None:
                raise AssertionError(f"worker exited{proc.tail()}")
            await trio.sleep(0.05)


def two_free_ports() -> int:
    """A port ``p`` with ``p + 1`` free too (child i listens on ``metrics_port + i``)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


async def test_a_taken_metrics_port_stops_the_worker_at_start(
    redis_url: str, tmp_path: Path
) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
        with worker(redis_url, tmp_path, *args) as proc:
            await eventually(until_gone(proc), what="the worker to exit", detail=proc.tail)
    assert proc.process.returncode == 78
    assert f"metrics_port: cannot listen on 127.0.0.1:{port}" in proc.stderr


async def test_each_process_of_processes_serves_its_own_port_and_the_supervisor_notifies(
    redis_url: str, systemd: Systemd, tmp_path: Path
) -> None:
    port = two_free_ports()
    args = ["--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--processes", "2"]
    env = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "400000"}
    with worker(redis_url, tmp_path, *args, **env) as proc:
        pids = []
        for child_port in (port, port + 1):
            _, body = await eventually_health(child_port, 200, proc)
            pids.append(body["pid"])
        assert len(set(pids)) == 2
        assert proc.process.pid not in pids
        await eventually(lambda: systemd.said("STATUS=supervising 2 of 2"), what="STATUS")
        await eventually(lambda: systemd.count("WATCHDOG=1") >= 2, what="watchdog pings")
        proc.signal(signal.SIGTERM)
        await eventually(until_gone(proc), what="the supervisor to exit", detail=proc.tail)
    assert systemd.count("READY=1") == 1
    assert systemd.count("STOPPING=1") == 1
    assert systemd.senders == {proc.process.pid}  # the unit's main process, never a child
