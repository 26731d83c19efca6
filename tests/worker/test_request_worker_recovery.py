"""Shutdown and crash recovery of the HTTP processor (wire spec §7, §9), end to end.

Real Redis, real HTTP servers, real launchers. Stopping, a result claimed elsewhere and a
Redis restart run a worker inside the test's trio loop; the kill -9 cases run a real worker
process (``tests/support/request_worker_main.py``) and recover its requests with a second worker.

The HTTP servers: hypercorn's ``/slow?seconds=N`` (``http_server``), and :class:`Gate`, a raw
HTTP/1.1 server that holds every request until the test releases it, so the first (killed)
process never gets an answer and the recovering one gets it at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.redis_io.lua import LuaScript
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.heartbeat import make_identity
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.launcher import Launcher
from patient_sidekiq.sidekiq.processor import Work
from patient_sidekiq.wire.jobs import CALLBACK_WORKER, REQUEST_WORKER
from patient_sidekiq.wire.packing import PayloadSettings, pack
from patient_sidekiq.wire.payload import Payload
from patient_sidekiq.wire.payload_store import PayloadReference, RedisPayloadStore
from patient_sidekiq.worker.inflight import gem_process_id
from patient_sidekiq.worker.request_call import CallbackRouting, RequestWorkerSettings
from patient_sidekiq.worker.request_worker import RequestWorker
from tests.support.http import Server
from tests.support.programs import REPO
from tests.support.redis import RedisServer
from tests.support.waiting import eventually
from tests.worker.test_request_worker import (
    CALLBACKS,
    QUEUE,
    callback_jobs,
    request_job,
    running_worker,
)

pytestmark = pytest.mark.integration


# --- helpers ---


def rid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def jid(n: int) -> str:
    return f"{n:024x}"


def numbered_jobs(url: Callable[[int], str], count: int) -> list[Job]:
    return [request_job(url(n), request_id=rid(n), jid=jid(n)) for n in range(count)]


def push(client: redis.Redis, jobs: Iterable[Job], queue: str = QUEUE) -> None:
    """Enqueue as Sidekiq's client does (the first job is popped first)."""
    client.sadd(keys.QUEUES, queue)
    client.lpush(keys.queue(queue), *(job.raw for job in jobs))


def queued_jobs(client: redis.Redis, queue: str = QUEUE) -> list[Job]:
    return [Job.parse(raw) for raw in reversed(client.lrange(keys.queue(queue), 0, -1))]


def without_enqueued_at(job: Job) -> dict[str, Any]:
    return {key: value for key, value in job.data.items() if key != "enqueued_at"}


def callbacks_by_request(client: redis.Redis) -> Counter[str]:
    return Counter(str(job.args[0]["request_id"]) for job in callback_jobs(client))


def body(result: dict[str, Any]) -> bytes:
    payload = Payload.from_wire(result["body"])
    assert payload is not None
    return payload.raw


def inflight_count(client: redis.Redis) -> tuple[int, int]:
    return client.zcard(keys.INFLIGHT_INDEX), client.hlen(keys.INFLIGHT_JOBS)


def inprogress_keys(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match=keys.inprogress("*", "*")))


def assert_nothing_failed(client: redis.Redis) -> None:
    assert client.zcard(keys.RETRY) == 0
    assert client.zcard(keys.DEAD) == 0


def assert_process_left(client: redis.Redis, process_id: str) -> None:
    assert not client.sismember(keys.GEM_PROCESSES, process_id)
    assert client.exists(keys.gem_process_max_connections(process_id)) == 0


def tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return f"\n--- worker process log (tail) ---\n{log.read_text(errors='replace')[-6000:]}"


async def wait_for(
    check: Callable[[], bool], what: str, seconds: float = 10, log: Path | None = None
) -> None:
    """:func:`eventually`, failing with ``what`` and the tail of the worker process's ``log``."""
    await eventually(check, seconds, what=what, detail=lambda: tail(log))


def settings(**changes: Any) -> RequestWorkerSettings:
    return replace(
        RequestWorkerSettings(
            http=HttpSettings(max_connections=16),
            routing=CallbackRouting(callback_queue=CALLBACKS),
        ),
        **changes,
    )


class RecordingWorker(RequestWorker):
    """The HTTP processor, remembering every RequestWorker job it was handed."""

    def __init__(self, settings: RequestWorkerSettings) -> None:
        super().__init__(settings)
        self.performed: list[Job] = []

    async def perform(self, job: Job, work: Work) -> None:
        self.performed.append(job)
        await super().perform(job, work)


@asynccontextmanager
async def in_test_worker(
    redis_url: str,
    worker: RequestWorker | None = None,
    *,
    shutdown_timeout: float = 5.0,
    recovery_interval: float = 30.0,
    heartbeat_interval: float = 10.0,
) -> AsyncIterator[tuple[Launcher, RequestWorker]]:
    """A launcher with the HTTP processor in this trio loop; leaving stops it and waits for
    ``Launcher.run`` to return."""
    async with running_worker(
        redis_url,
        worker=worker if worker is not None else RecordingWorker(settings()),
        shutdown_timeout=shutdown_timeout,
        recovery_interval=recovery_interval,
        heartbeat_interval=heartbeat_interval,
    ) as running:
        yield running


@asynccontextmanager
async def worker_process(
    redis_url: str, log: Path, process_id: str, identity: str, *options: str
) -> AsyncIterator[trio.Process]:
    """``tests/support/request_worker_main.py`` as a real process; always killed and reaped
    on exit."""
    command = [
        sys.executable,
        "-m",
        "tests.support.request_worker_main",
        redis_url,
        "--process-id",
        process_id,
        "--identity",
        identity,
        "--queue",
        QUEUE,
        "--callback-queue",
        CALLBACKS,
        *options,
    ]
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(command, cwd=REPO, stdout=output, stderr=output)
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(10):
                await process.wait()


class Gate:
    """A raw HTTP/1.1 server: reads a request, holds it until :meth:`release`, answers 200."""

    def __init__(self) -> None:
        self.port = 0
        self.received: list[str] = []
        self._released = trio.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def release(self) -> None:
        self._released.set()

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            self.received.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
            await self._released.wait()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n"
                b"connection: close\r\n\r\nopen"
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client is gone (a killed worker)
        finally:
            await stream.aclose()


@pytest.fixture
async def gate(nursery: trio.Nursery) -> Gate:
    server = Gate()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = int(listeners[0].socket.getsockname()[1])
    return server


# --- 1. graceful stop ---


async def test_graceful_stop_lets_in_flight_requests_deliver(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    # Longer than the 1 s a stop can spend ending the fetch loop's blocking wait, so the
    # requests are still running when the shutdown wait begins.
    jobs = numbered_jobs(lambda n: http_server.url("/slow?seconds=2"), 3)
    with trio.fail_after(20):
        async with in_test_worker(redis_url, shutdown_timeout=10) as (_, worker):
            push(redis_client, jobs)
            await wait_for(lambda: inflight_count(redis_client) == (3, 3), "3 requests in flight")
            assert callback_jobs(redis_client) == []
        # Leaving stopped the launcher while all three were still running.

    assert callbacks_by_request(redis_client) == {rid(n): 1 for n in range(3)}
    for callback in callback_jobs(redis_client):
        assert callback.class_name == CALLBACK_WORKER
        data, kind, _ = callback.args
        assert (kind, data["status"], body(data)) == ("response", 200, b"slow")
    assert redis_client.llen(keys.queue(QUEUE)) == 0  # nothing re-enqueued
    assert inflight_count(redis_client) == (0, 0)
    assert inprogress_keys(redis_client) == []
    assert isinstance(worker, RecordingWorker)
    assert Counter(job.jid for job in worker.performed) == {jid(n): 1 for n in range(3)}
    assert_nothing_failed(redis_client)
    assert_process_left(redis_client, worker.process_id)


# --- 2. hard stop ---


async def test_hard_stop_requeues_each_original_job_exactly_once(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    old = time.time() - 3600
    jobs = [
        job.with_fields(enqueued_at=old)
        for job in numbered_jobs(lambda n: http_server.url("/slow?seconds=30"), 4)
    ]
    with trio.fail_after(20):
        async with in_test_worker(redis_url, shutdown_timeout=0.3) as (_, worker):
            push(redis_client, jobs)
            await wait_for(lambda: inflight_count(redis_client) == (4, 4), "4 requests in flight")
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping

    assert stopped_in < 5, "the stop waited for the 30 s requests"
    requeued = queued_jobs(redis_client)
    assert Counter(job.jid for job in requeued) == {jid(n): 1 for n in range(4)}
    originals = {job.jid: job for job in jobs}
    for job in requeued:
        original = originals[job.jid]
        assert job.class_name == REQUEST_WORKER
        assert job.args == original.args
        assert without_enqueued_at(job) == without_enqueued_at(original)
        assert job.enqueued_at is not None
        assert abs(job.enqueued_at - time.time()) < 60  # re-stamped by the push
    assert redis_client.sismember(keys.QUEUES, QUEUE)
    assert callback_jobs(redis_client) == []
    assert inflight_count(redis_client) == (0, 0)
    assert inprogress_keys(redis_client) == []  # and not requeued a second time from there
    assert_nothing_failed(redis_client)
    assert_process_left(redis_client, worker.process_id)


# --- 3. a result whose task was claimed elsewhere ---


async def test_result_of_a_task_claimed_elsewhere_is_not_delivered_nor_requeued(
    redis_url: str,
    redis_client: redis.Redis,
    http_server: Server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="patient_sidekiq")
    short = request_job(http_server.url("/slow?seconds=0.5"), request_id=rid(0), jid=jid(0))
    long = request_job(http_server.url("/slow?seconds=30"), request_id=rid(1), jid=jid(1))
    with trio.fail_after(20):
        async with in_test_worker(redis_url, shutdown_timeout=0.3) as (_, worker):
            push(redis_client, [short, long])
            await wait_for(lambda: inflight_count(redis_client) == (2, 2), "2 requests in flight")
            # Another process's sweep took both (and re-enqueued them, elsewhere).
            for n in range(2):
                assert redis_client.hdel(keys.INFLIGHT_JOBS, worker.monitor.task_id(rid(n))) == 1
            await wait_for(lambda: worker.in_flight == 1, "the short request to finish")
            assert callback_jobs(redis_client) == []
            assert redis_client.zscore(keys.INFLIGHT_INDEX, worker.monitor.task_id(rid(0))) is None
        # Hard stop: the long request is cancelled, and its job must not come back either.

    assert callback_jobs(redis_client) == []
    assert redis_client.llen(keys.queue(QUEUE)) == 0
    assert inflight_count(redis_client) == (0, 0)
    assert inprogress_keys(redis_client) == []
    assert redis_client.hget(keys.TOTALS, "requests") is None  # stats only with a delivery
    assert_nothing_failed(redis_client)
    assert any("result dropped" in record.getMessage() for record in caplog.records)


# --- 4. Redis down while the result is pushed ---


def result_push_retried(caplog: pytest.LogCaptureFixture) -> bool:
    return any("could not push the result" in r.getMessage() for r in caplog.records)


async def test_result_push_waits_for_redis_to_come_back(
    private_redis: RedisServer, http_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="patient_sidekiq")
    client = redis.Redis.from_url(private_redis.url)
    slow = request_job(http_server.url("/slow?seconds=1.5"), request_id=rid(0), jid=jid(0))
    after = request_job(http_server.url("/status/200"), request_id=rid(1), jid=jid(1))
    try:
        with trio.fail_after(30):
            # Short intervals: every loop (heartbeats, sweep, recovery) meets the outage too.
            worker = RecordingWorker(
                settings(result_retry_interval=0.2, heartbeat_interval=0.2, orphan_threshold=0.5)
            )
            async with in_test_worker(
                private_redis.url, worker, heartbeat_interval=0.2, recovery_interval=0.2
            ) as _:
                push(client, [slow])
                await wait_for(lambda: inflight_count(client) == (1, 1), "the request in flight")
                client.save()  # the restarted server reloads this (it runs without --save)
                private_redis.kill()
                await wait_for(lambda: result_push_retried(caplog), "a retried result push")
                assert worker.in_flight == 1  # the result is still held, not dropped
                await trio.to_thread.run_sync(private_redis.start)
                await wait_for(lambda: client.llen(keys.queue(CALLBACKS)) == 1, "the callback")
                # The worker survived the outage: it still takes new work.
                push(client, [after])
                await wait_for(lambda: client.llen(keys.queue(CALLBACKS)) == 2, "a 2nd callback")

        assert callbacks_by_request(client) == {rid(0): 1, rid(1): 1}
        # Each retried push is a debug line; the outage is one warning, however many wait.
        pushes = [r for r in caplog.records if "could not push the result" in r.getMessage()]
        assert {r.levelno for r in pushes} == {logging.DEBUG}
        unavailable = [r for r in caplog.records if r.getMessage().startswith("Redis unavail")]
        assert len(unavailable) == 1
        statuses = {
            job.args[0]["request_id"]: job.args[0]["status"] for job in callback_jobs(client)
        }
        assert statuses == {rid(0): 200, rid(1): 200}
        assert inflight_count(client) == (0, 0)
        assert client.llen(keys.queue(QUEUE)) == 0
        assert Counter(job.jid for job in worker.performed) == {jid(0): 1, jid(1): 1}
        assert_nothing_failed(client)
    finally:
        client.close()


# --- 5 and 6. kill -9 mid-request, recovered by another process ---


async def kill_mid_request_then_recover(
    redis_url: str,
    client: redis.Redis,
    gate: Gate,
    log: Path,
    jobs: Sequence[Job],
    *,
    process_options: Sequence[str] = (),
    payloads: PayloadSettings | None = None,
    after_kill: Callable[[], None] = lambda: None,
) -> tuple[RecordingWorker, str]:
    """Run ``jobs`` in a worker process, SIGKILL it mid-request, recover with a second worker.

    Returns the second worker (with the jobs it was handed) and the dead process's id once
    every job has called back and nothing else happens for a few sweep/recovery rounds.
    """
    dead = gem_process_id("crashhost")
    identity = make_identity("crashhost")
    count = len(jobs)
    push(client, jobs)
    async with worker_process(redis_url, log, dead, identity, *process_options) as process:
        await wait_for(
            lambda: inflight_count(client) == (count, count), f"{count} in flight", 20, log
        )
        # Registered before the request is sent: wait until the server holds every one.
        await wait_for(lambda: len(gate.received) == count, f"{count} requests held", 10, log)
        members = {member.decode() for member in client.hkeys(keys.INFLIGHT_JOBS)}
        assert members == {f"{dead}/{job.args[4]}" for job in jobs}
        process.kill()
        await process.wait()
    assert process.returncode == -signal.SIGKILL

    # The jobs are only in the gem's in-flight keys now; the hand-off emptied the dead
    # process's in-progress list, but its record is still there for the recovery to look at.
    assert client.llen(keys.queue(QUEUE)) == 0
    inprogress = keys.inprogress(identity, QUEUE)
    assert client.llen(inprogress) == 0
    assert client.hexists(keys.INPROGRESS_REGISTRY, inprogress)
    after_kill()
    # Sidekiq's process hash lives 60 s after the last beat: pretend that time has passed so
    # the second worker's reliable-fetch recovery takes the dead process's lists too.
    client.delete(identity)
    # gc_lock lives max(2 * heartbeat, 120) s: if the kill landed inside a sweep, expire it.
    if client.get(keys.GC_LOCK) == dead.encode():
        client.delete(keys.GC_LOCK)
    gate.release()

    worker = RecordingWorker(
        settings(
            heartbeat_interval=0.2,
            orphan_threshold=0.5,
            payloads=payloads if payloads is not None else PayloadSettings(),
        )
    )
    async with in_test_worker(redis_url, worker, recovery_interval=0.2) as _:
        # The start-up recovery pass ran before the launcher reported started.
        assert not client.hexists(keys.INPROGRESS_REGISTRY, inprogress)
        await wait_for(
            lambda: client.llen(keys.queue(CALLBACKS)) >= count,
            f"{count} callbacks",
            15,
        )
        await wait_for(
            lambda: (
                worker.in_flight == 0
                and client.llen(keys.queue(QUEUE)) == 0
                and inflight_count(client) == (0, 0)
            ),
            "the second worker to be idle",
        )
        await trio.sleep(0.6)  # a few more sweeps and recovery passes: nothing new may appear
    return worker, dead


def assert_recovered_once(
    client: redis.Redis, worker: RecordingWorker, dead: str, jobs: Sequence[Job]
) -> None:
    request_ids = [str(job.args[4]) for job in jobs]
    assert callbacks_by_request(client) == dict.fromkeys(request_ids, 1)
    for callback in callback_jobs(client):
        data, kind, _ = callback.args
        assert (kind, data["status"], body(data)) == ("response", 200, b"open")
    # The sweep re-enqueued each ORIGINAL job (same jid, same args), once.
    originals = {job.jid: job for job in jobs}
    assert Counter(job.jid for job in worker.performed) == dict.fromkeys(originals, 1)
    for job in worker.performed:
        assert without_enqueued_at(job) == without_enqueued_at(originals[job.jid])
        assert job.enqueued_at is not None
    assert inflight_count(client) == (0, 0)
    assert client.llen(keys.queue(QUEUE)) == 0
    assert inprogress_keys(client) == []
    assert not client.sismember(keys.GEM_PROCESSES, dead)  # pruned by the sweep
    assert client.exists(keys.gem_process_max_connections(dead)) == 0
    assert_nothing_failed(client)


async def test_kill_9_mid_request_is_recovered_by_another_process(
    redis_url: str, redis_client: redis.Redis, gate: Gate, tmp_path: Path
) -> None:
    jobs = numbered_jobs(lambda n: gate.url(f"/hold/{n}"), 5)
    with trio.fail_after(40):
        worker, dead = await kill_mid_request_then_recover(
            redis_url, redis_client, gate, tmp_path / "worker.log", jobs
        )
    assert_recovered_once(redis_client, worker, dead, jobs)
    assert sorted(gate.received) == sorted(
        f"GET /hold/{n} HTTP/1.1" for n in range(5) for _ in "12"
    )


async def test_stored_request_payload_survives_a_kill_9(
    redis_url: str, redis_client: redis.Redis, gate: Gate, tmp_path: Path
) -> None:
    async with RedisBridge(redis_url) as bridge:
        store = RedisPayloadStore(bridge)
        storing = PayloadSettings(stores={"redis": store}, default_store="redis", store_threshold=0)
        jobs = []
        for plain in numbered_jobs(lambda n: gate.url(f"/hold/{n}"), 3):
            reference = await pack(plain.args[0], storing)
            assert set(reference) == {"$ref"}
            jobs.append(
                request_job("", data=reference, request_id=str(plain.args[4]), jid=plain.jid)
            )
        stored = [keys.payload_key(PayloadReference.from_wire(job.args[0]).key) for job in jobs]

        def still_stored() -> None:
            assert redis_client.exists(*stored) == len(stored)  # not deleted by the dead one

        with trio.fail_after(40):
            worker, dead = await kill_mid_request_then_recover(
                redis_url,
                redis_client,
                gate,
                tmp_path / "worker.log",
                jobs,
                process_options=["--payload-store"],
                payloads=PayloadSettings(stores={"redis": store}),
                after_kill=still_stored,
            )
    assert_recovered_once(redis_client, worker, dead, jobs)
    for callback in callback_jobs(redis_client):
        assert callback.args[0]["url"].startswith(gate.url("/hold/"))  # read from the store
    assert redis_client.exists(*stored) == 0  # deleted once each result was in Redis


# --- a real process stopped by SIGTERM with a short shutdown timeout ---


async def test_sigterm_hard_stop_of_a_real_process_requeues_originals(
    redis_url: str, redis_client: redis.Redis, gate: Gate, tmp_path: Path
) -> None:
    process_id = gem_process_id("termhost")
    identity = make_identity("termhost")
    jobs = numbered_jobs(lambda n: gate.url(f"/hold/{n}"), 3)
    log = tmp_path / "worker.log"
    push(redis_client, jobs)
    with trio.fail_after(30):
        async with worker_process(
            redis_url, log, process_id, identity, "--shutdown-timeout", "0.3"
        ) as process:
            await wait_for(lambda: inflight_count(redis_client) == (3, 3), "3 in flight", 20, log)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await process.wait()
    assert process.returncode == 0, tail(log)

    requeued = queued_jobs(redis_client)
    assert Counter(job.jid for job in requeued) == {jid(n): 1 for n in range(3)}
    originals = {job.jid: job for job in jobs}
    for job in requeued:
        assert without_enqueued_at(job) == without_enqueued_at(originals[job.jid])
    assert callback_jobs(redis_client) == []
    assert inflight_count(redis_client) == (0, 0)
    assert inprogress_keys(redis_client) == []
    assert_process_left(redis_client, process_id)
    assert not redis_client.sismember(keys.PROCESSES, identity)
    assert_nothing_failed(redis_client)


# --- the claim's reply lost: the claim landed, but the worker never heard so ---


class LosingProxy:
    """A TCP proxy to Redis. Once :meth:`arm`-ed, the next command holding ``marker`` reaches
    Redis (and runs), but its connection is then cut before any reply gets back."""

    def __init__(self, target_port: int, marker: bytes) -> None:
        self.port = 0
        self.cuts = 0
        self._target_port = target_port
        self._marker = marker
        self._armed = False

    def arm(self) -> None:
        self._armed = True

    async def handle(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self._target_port)
        losing = False

        async def to_redis(cancel: trio.CancelScope) -> None:
            nonlocal losing
            window = b""
            while chunk := await client.receive_some(65536):
                window = window[-len(self._marker) :] + chunk
                if self._armed and self._marker in window:
                    self._armed = False
                    losing = True  # before Redis can have the whole command: no reply escapes
                    await upstream.send_all(chunk)
                    await trio.sleep(0.3)  # Redis runs it
                    self.cuts += 1
                    break
                await upstream.send_all(chunk)
            cancel.cancel()

        async def to_client(cancel: trio.CancelScope) -> None:
            while chunk := await upstream.receive_some(65536):
                if not losing:
                    await client.send_all(chunk)
            cancel.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(to_redis, nursery.cancel_scope)
                nursery.start_soon(to_client, nursery.cancel_scope)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await upstream.aclose()
            await client.aclose()


@pytest.fixture
async def losing_proxy(
    redis_server: RedisServer, redis_client: redis.Redis, nursery: trio.Nursery
) -> LosingProxy:
    """A proxy to the session's Redis that loses the reply of one claim (once armed)."""
    claim = LuaScript("inflight_claim.lua", "patient_sidekiq.worker")
    redis_client.script_load(claim.source)  # so the first EVALSHA runs (no NOSCRIPT round)
    proxy = LosingProxy(redis_server.port, f"EVALSHA\r\n$40\r\n{claim.sha}".encode())
    listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
    proxy.port = int(listeners[0].socket.getsockname()[1])
    return proxy


async def deliver_with_lost_claim_reply(
    proxy: LosingProxy, client: redis.Redis, job: Job, payloads: PayloadSettings
) -> RecordingWorker:
    """Run ``job`` in a worker talking to Redis through ``proxy``; its claim's reply is lost."""
    worker = RecordingWorker(settings(payloads=payloads, result_retry_interval=0.1))
    with trio.fail_after(20):
        async with in_test_worker(f"redis://127.0.0.1:{proxy.port}/0", worker) as _:
            proxy.arm()
            push(client, [job])
            await wait_for(lambda: proxy.cuts == 1, "the claim's reply to be lost")
            await wait_for(lambda: worker.in_flight == 0, "the delivery to end")
    return worker


async def test_lost_claim_reply_still_delivers_exactly_once(
    redis_client: redis.Redis, http_server: Server, losing_proxy: LosingProxy
) -> None:
    job = request_job(http_server.url("/status/200"), request_id=rid(0), jid=jid(0))
    await deliver_with_lost_claim_reply(losing_proxy, redis_client, job, PayloadSettings())

    assert callbacks_by_request(redis_client) == {rid(0): 1}  # the retried claim did nothing
    assert redis_client.llen(keys.queue(QUEUE)) == 0
    assert inflight_count(redis_client) == (0, 0)
    assert redis_client.hget(keys.TOTALS, "requests") == b"1"  # counted once
    assert_nothing_failed(redis_client)


async def test_lost_claim_reply_keeps_the_delivered_stored_result(
    redis_url: str, redis_client: redis.Redis, http_server: Server, losing_proxy: LosingProxy
) -> None:
    async with RedisBridge(redis_url) as bridge:  # the store goes straight to Redis
        store = RedisPayloadStore(bridge)
        storing = PayloadSettings(stores={"redis": store}, default_store="redis", store_threshold=0)
        plain = request_job(http_server.url("/status/200"), request_id=rid(0), jid=jid(0))
        reference = await pack(plain.args[0], storing)
        job = request_job("", data=reference, request_id=rid(0), jid=jid(0))
        stored_request = keys.payload_key(PayloadReference.from_wire(reference).key)
        await deliver_with_lost_claim_reply(losing_proxy, redis_client, job, storing)

    [callback] = callback_jobs(redis_client)  # the claim ran once: one callback job
    assert inflight_count(redis_client) == (0, 0)
    stored_result = keys.payload_key(PayloadReference.from_wire(callback.args[0]).key)
    assert redis_client.exists(stored_result) == 1, "the callback job's result was deleted"
    assert redis_client.exists(stored_request) == 0, "the stored request was kept"
