"""A stop told as it goes, and a second signal meaning "now", in real worker processes.

``patient-sidekiq run`` (one process, and under ``--processes 2``) with two requests hanging
on a local server: TERM logs the wait and its progress; a second TERM (or INT) ends the wait
at once and requeues both requests' original jobs, long before the shutdown timeout. The
tests wait for log lines and Redis state, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from patient_sidekiq.client.enqueue import Client
from tests.support.programs import REPO
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

QUEUE = "queue:patient_http"


class Hanging:
    """An HTTP server whose GETs wait until :meth:`release` (or the end of the test)."""

    def __init__(self) -> None:
        self.arrived = 0
        self.released = threading.Event()
        hanging = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hanging.arrived += 1
                hanging.released.wait(60)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = Hanging()
    server.thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.server.shutdown()
        server.server.server_close()


@contextmanager
def run(
    redis_url: str, tmp_path: Path, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PATIENT_HTTP_") and k not in ("REDIS_URL", "REDIS_PROVIDER")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log = tmp_path / "stderr.log"
    argv = [sys.executable, "-m", "patient_sidekiq", "run", "--redis-url", redis_url]
    # -t 60: only the second signal can end the stop within the test's deadlines.
    argv += ["--heartbeat-interval", "1", "-t", "60", *args]
    with log.open("wb") as err:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def logged(log: Path, text: str, count: int = 1) -> bool:
    return log.read_text(errors="replace").count(text) >= count


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    """The queued jobs, without ``enqueued_at`` (a requeue stamps it afresh, as the gem does)."""
    jobs = [json.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]
    for job in jobs:
        job.pop("enqueued_at")
    return sorted(jobs, key=lambda job: str(job["jid"]))


def enqueue_two(
    redis_url: str, redis_client: redis.Redis, hanging: Hanging
) -> list[dict[str, Any]]:
    redis_client.delete(QUEUE)
    with Client(redis_url) as client:
        for path in ("/a", "/b"):
            client.get(hanging.url(path), callback="MyApp::DoneCallback")
    return queued(redis_client)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_term_logs_the_wait_and_a_second_signal_requeues_at_once(
    redis_url: str,
    redis_client: redis.Redis,
    hanging: Hanging,
    tmp_path: Path,
    second: signal.Signals,
) -> None:
    originals = enqueue_two(redis_url, redis_client, hanging)
    with run(redis_url, tmp_path, "--queue", "patient_http") as (process, log):

        def tail() -> str:
            return "\n" + log.read_text(errors="replace")[-3000:]

        def until(text: str, count: int = 1) -> None:
            wait_for(lambda: logged(log, text, count), repr(text), 30, process=process, detail=tail)

        wait_for(lambda: hanging.arrived == 2, "both requests running", 30, process=process)
        process.send_signal(signal.SIGTERM)
        until("stopping: waiting up to 60s for 2 running requests")
        until("waiting for 2 requests, 5")  # the first progress line, ~55 s left
        process.send_signal(second)
        until("stopping now: not waiting for running requests any longer")
        until("forced stop: requeueing 2 unfinished requests")
        assert process.wait(20) == 0, tail()
    # Both original jobs are back (same jid, same args); nothing ran twice, nothing was lost.
    assert queued(redis_client) == originals
    assert not logged(log, "shutdown timeout")


def test_under_the_supervisor_a_second_term_reaches_every_child(
    redis_url: str, redis_client: redis.Redis, hanging: Hanging, tmp_path: Path
) -> None:
    originals = enqueue_two(redis_url, redis_client, hanging)
    with run(redis_url, tmp_path, "--queue", "patient_http", "--processes", "2") as (
        process,
        log,
    ):

        def tail() -> str:
            return "\n" + log.read_text(errors="replace")[-3000:]

        def until(text: str, count: int = 1) -> None:
            wait_for(lambda: logged(log, text, count), repr(text), 30, process=process, detail=tail)

        # Both children handle signals (a TERM before that would simply kill one).
        wait_for(lambda: redis_client.scard("processes") == 2, "two children", 30, process=process)
        wait_for(lambda: hanging.arrived == 2, "both requests running", 30, process=process)
        process.send_signal(signal.SIGTERM)
        # Each child says what it waits for (one may have both requests, the other none).
        until("stopping: ", 2)
        process.send_signal(signal.SIGTERM)
        # (a child with nothing to wait for may have ended already)
        until("received SIGTERM again: telling ")
        until("forced stop: requeueing ")
        assert process.wait(20) == 0, tail()  # 0: no child had to be killed
    assert queued(redis_client) == originals
    text = log.read_text(errors="replace")
    forced = [line for line in text.splitlines() if "forced stop: requeueing" in line]
    assert sum(int(line.split("requeueing ")[1].split()[0]) for line in forced) == 2
