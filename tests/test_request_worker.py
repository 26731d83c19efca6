"""The HTTP processor end to end: real Redis, real local HTTP servers, a real launcher."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import JobArgumentError
from patient_sidekiq.http_client import HttpSettings
from patient_sidekiq.job import Job
from patient_sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.processor import Dispatcher
from patient_sidekiq.request_worker import (
    CALLBACK_WORKER,
    REQUEST_WORKER,
    CallbackRouting,
    RequestCall,
    RequestWorker,
    RequestWorkerSettings,
)
from tests.http_servers import Server

pytest_plugins = ["tests.conftest_http"]
pytestmark = pytest.mark.integration

QUEUE = "patient_http"
CALLBACKS = "callbacks"


def request_job(
    url: str,
    *,
    method: str = "get",
    callback: str = "OracleCallback",
    raise_error_responses: bool | None = False,
    callback_args: dict[str, Any] | None = None,
    request_id: str = "00000000-0000-4000-8000-000000000001",
    jid: str = "b0a04c29806cdb2637f2fa7e",
    headers: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    data: Any = None,
) -> Job:
    """A RequestWorker job shaped exactly as the gem enqueues it (golden ``jobs``)."""
    payload = (
        data
        if data is not None
        else {
            "http_method": method,
            "url": url,
            "headers": headers or {},
            "body": body,
            "timeout": None,
            "max_redirects": None,
        }
    )
    return Job.new(
        REQUEST_WORKER,
        [payload, callback, raise_error_responses, callback_args, request_id],
        queue=QUEUE,
        jid=jid,
        created_at=1795615729.9256558,
    )


async def eventually(check: Callable[[], bool], seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.01)


def callback_jobs(client: redis.Redis, queue: str = CALLBACKS) -> list[Job]:
    return [Job.parse(raw) for raw in reversed(client.lrange(keys.queue(queue), 0, -1))]


@asynccontextmanager
async def running_worker(
    redis_url: str,
    *,
    settings: RequestWorkerSettings | None = None,
    concurrency: int = 16,
    shutdown_timeout: float = 5.0,
) -> AsyncIterator[tuple[Launcher, RequestWorker]]:
    worker = RequestWorker(
        settings
        or RequestWorkerSettings(
            http=HttpSettings(max_connections=concurrency),
            routing=CallbackRouting(callback_queue=CALLBACKS),
        )
    )
    launcher = Launcher(
        WorkerSettings(
            redis_url=redis_url,
            queues=[(QUEUE, 0)],
            concurrency=concurrency,
            shutdown_timeout=shutdown_timeout,
            handle_os_signals=False,
        ),
        Dispatcher(),
        services=[worker],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(launcher.run)
        try:
            yield launcher, worker
        finally:
            launcher.stop()


async def test_golden_request_produces_the_gems_callback_job(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    job = request_job(http_server.url("/status/200"), callback_args={"user_id": 42})
    async with running_worker(redis_url):
        redis_client.lpush(keys.queue(QUEUE), job.raw)
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
    [callback] = callback_jobs(redis_client)
    assert list(callback.data) == [
        "retry",
        "queue",
        "args",
        "class",
        "jid",
        "created_at",
        "enqueued_at",
    ]
    assert callback.class_name == CALLBACK_WORKER
    assert callback.queue == CALLBACKS
    assert callback["retry"] is True
    data, kind, name = callback.args
    assert (kind, name) == ("response", "OracleCallback")
    assert data["status"] == 200
    assert data["request_id"] == "00000000-0000-4000-8000-000000000001"
    assert data["callback_args"] == {"user_id": 42}
    assert data["redirects"] == []
    assert data["http_method"] == "get"
    assert data["url"] == http_server.url("/status/200")
    assert redis_client.zcard(keys.INFLIGHT_INDEX) == 0
    assert redis_client.hlen(keys.INFLIGHT_JOBS) == 0
    totals = redis_client.hgetall(keys.TOTALS)
    assert totals[b"requests"] == b"1"
    assert totals[b"http_status:200"] == b"1"


def test_request_call_checks_the_five_args() -> None:
    with pytest.raises(JobArgumentError, match="given 4, expected 5"):
        RequestCall.from_args([{}, "C", None, None])
    with pytest.raises(JobArgumentError, match="callback name"):
        RequestCall.from_args([{}, 5, None, None, "id"])
    with pytest.raises(JobArgumentError, match="raise_error_responses"):
        RequestCall.from_args([{}, "C", "yes", None, "id"])
    call = RequestCall.from_args([{}, "C", None, {"a": 1}, None])
    assert call.callback_args == {"a": 1}
    _ = (json, replace)
