"""Done-when check of the HTTP processor: a RequestWorker job exactly as the gem enqueues it
(golden ``jobs``) yields the CallbackWorker job the gem pushes for the same HTTP exchange,
apart from duration, the URL's host and the Python exception's class and backtrace."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher
from patient_sidekiq.worker.request_call import CallbackRouting, RequestWorkerSettings
from patient_sidekiq.worker.request_worker import RequestWorker
from tests.support.programs import free_port

pytestmark = pytest.mark.integration

GOLDEN_URL = "https://api.example.com/v1/items"


async def _answer(body: bytes, stream: trio.SocketStream) -> None:
    """HTTP/1.0 with one header and a body ended by close: the headers the golden names."""
    async with stream:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            received += chunk
        await stream.send_all(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + body)


@asynccontextmanager
async def worker(redis_url: str, queue: str, callback_queue: str) -> AsyncIterator[None]:
    launcher = Launcher(
        WorkerSettings(redis_url=redis_url, queues=[(queue, 0)], handle_os_signals=False),
        Dispatcher(),
        services=[
            RequestWorker(
                RequestWorkerSettings(
                    http=HttpSettings(max_connections=10),
                    routing=CallbackRouting(callback_queue=callback_queue),
                )
            )
        ],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(launcher.run)
        try:
            yield
        finally:
            launcher.stop()


async def one_callback(redis_client: redis.Redis, queue: str) -> Job:
    with trio.fail_after(10):
        while not redis_client.llen(keys.queue(queue)):
            await trio.sleep(0.01)
    [raw] = redis_client.lrange(keys.queue(queue), 0, -1)
    return Job.parse(raw)


def gem_job(golden: dict[str, Any], url: str) -> Job:
    data = copy.deepcopy(golden["jobs"]["RequestWorker_plain"]["job"])
    data["args"][0]["url"] = url
    data["args"][4] = golden["jobs"]["CallbackWorker_response"]["args"][0]["request_id"]
    return Job.parse(rubyjson.dumps(data))


async def test_response_matches_the_gems_callback_job(
    redis_url: str, redis_client: redis.Redis, golden: dict[str, Any], nursery: trio.Nursery
) -> None:
    expected = golden["jobs"]["CallbackWorker_response"]
    body = expected["args"][0]["body"]["value"].encode()
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(_answer, body), 0, host="127.0.0.1")
    )
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1/items"
    job = gem_job(golden, f"{url}?a=1")
    async with worker(redis_url, job.queue or "default", "callbacks"):
        redis_client.lpush(keys.queue(job.queue or "default"), job.raw)
        callback = await one_callback(redis_client, "callbacks")

    assert list(callback.data)[:-1] == list(expected)  # then enqueued_at, stamped at push
    assert callback["retry"] is expected["retry"]
    assert callback.class_name == expected["class"]
    got, want = callback.args[0], expected["args"][0]
    assert list(got) == list(want)
    assert isinstance(got.pop("duration"), float)
    want = {**want, "url": f"{url}?a=1"}
    del want["duration"]
    # The golden request had no query string; the gem keeps the final URL as requested.
    assert got == want
    assert callback.args[1:] == expected["args"][1:]


async def test_connection_error_matches_the_gems_error_fields(
    redis_url: str, redis_client: redis.Redis, golden: dict[str, Any]
) -> None:
    expected = golden["jobs"]["CallbackWorker_request_error"]
    url = f"http://127.0.0.1:{free_port()}/v1/items"
    job = gem_job(golden, url)
    async with worker(redis_url, job.queue or "default", "callbacks"):
        redis_client.lpush(keys.queue(job.queue or "default"), job.raw)
        callback = await one_callback(redis_client, "callbacks")

    got, want = callback.args[0], expected["args"][0]
    assert list(got) == list(want)
    assert callback.args[1:] == expected["args"][1:]
    assert got["error_type"] == want["error_type"] == "connection"
    assert got["request_id"] == want["request_id"]
    assert (got["url"], got["http_method"]) == (url, "get")
    assert got["callback_args"] == {"user_id": 42}  # the plain job's callback args
    assert got["class_name"] == want["class_name"] == "Errno::ECONNREFUSED"
    assert got["message"].startswith("Connection refused - ")
    assert all(isinstance(line, str) for line in got["backtrace"])
