"""The HTTP processor end to end: real Redis, real local HTTP servers, a real launcher."""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, cast

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.config.model import Config
from patient_sidekiq.errors import JobArgumentError
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher
from patient_sidekiq.wire.encryption import MessageEncryptor
from patient_sidekiq.wire.jobs import CALLBACK_WORKER, REQUEST_WORKER
from patient_sidekiq.wire.packing import PayloadSettings, pack, unpack
from patient_sidekiq.wire.payload_store import RedisPayloadStore
from patient_sidekiq.worker.request_call import CallbackRouting, RequestCall, RequestWorkerSettings
from patient_sidekiq.worker.request_worker import RequestWorker
from patient_sidekiq.worker.stats import TOTALS_TTL
from tests.support.http import Server, TlsCerts
from tests.support.programs import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

QUEUE = "patient_http"
CALLBACKS = "callbacks"
ENCRYPTOR = MessageEncryptor("oracle-secret-key")


def request_data(
    url: str,
    *,
    method: str = "get",
    headers: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    timeout: float | None = None,
    max_redirects: int | None = None,
) -> dict[str, Any]:
    """A request payload (``args[0]`` once unwrapped) in the gem's key order."""
    return {
        "http_method": method,
        "url": url,
        "headers": headers or {},
        "body": body,
        "timeout": timeout,
        "max_redirects": max_redirects,
    }


def request_job(
    url: str,
    *,
    method: str = "get",
    callback: Any = "OracleCallback",
    raise_error_responses: Any = False,
    callback_args: Any = None,
    request_id: str | None = "00000000-0000-4000-8000-000000000001",
    jid: str = "b0a04c29806cdb2637f2fa7e",
    headers: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    timeout: float | None = None,
    max_redirects: int | None = None,
    data: Any = None,
) -> Job:
    """A RequestWorker job shaped exactly as the gem enqueues it (golden ``jobs``)."""
    payload = (
        data
        if data is not None
        else request_data(
            url,
            method=method,
            headers=headers,
            body=body,
            timeout=timeout,
            max_redirects=max_redirects,
        )
    )
    return Job.new(
        REQUEST_WORKER,
        [payload, callback, raise_error_responses, callback_args, request_id],
        queue=QUEUE,
        jid=jid,
        created_at=1795615729.9256558,
    )


def numbered_job(url: str, n: int, **kwargs: Any) -> Job:
    """A request job with its own jid, request id and ``callback_args`` ``{"n": n}``."""
    return request_job(
        url,
        jid=f"{n:024x}",
        request_id=f"00000000-0000-4000-8000-{n:012x}",
        callback_args={"n": n},
        **kwargs,
    )


def callback_jobs(client: redis.Redis, queue: str = CALLBACKS) -> list[Job]:
    return [Job.parse(raw) for raw in reversed(client.lrange(keys.queue(queue), 0, -1))]


def callbacks_by_n(client: redis.Redis, queue: str = CALLBACKS) -> dict[int, Job]:
    """The callback jobs of :func:`numbered_job` requests, by their ``n``."""
    result: dict[int, Job] = {}
    for job in callback_jobs(client, queue):
        data = job.args[0]
        args = data["response"]["callback_args"] if "response" in data else data["callback_args"]
        result[args["n"]] = job
    return result


def retry_jobs(client: redis.Redis) -> dict[str, Job]:
    """The ``retry`` set by jid."""
    raws = cast(list[bytes], client.zrange(keys.RETRY, 0, -1))
    jobs = [Job.parse(raw) for raw in raws]
    return {str(job.jid): job for job in jobs}


def totals_of(client: redis.Redis) -> dict[str, str]:
    fields = cast(dict[bytes, bytes], client.hgetall(keys.TOTALS))
    return {k.decode(): v.decode() for k, v in fields.items()}


def body_bytes(body: dict[str, Any]) -> bytes:
    """The raw bytes of a wire payload (spec §2.1)."""
    if body["encoding"] == "text":
        return str(body["value"]).encode("utf-8")
    decoded = base64.b64decode(body["value"], validate=True)
    return gzip.decompress(decoded) if body["encoding"] == "gzipped" else decoded


@asynccontextmanager
async def running_worker(
    redis_url: str,
    *,
    settings: RequestWorkerSettings | None = None,
    concurrency: int = 16,
    max_connections: int | None = None,
    http: HttpSettings | None = None,
    payloads: PayloadSettings | None = None,
    routing: CallbackRouting | None = None,
    shutdown_timeout: float = 5.0,
    worker: RequestWorker | None = None,
    recovery_interval: float = 30.0,
    heartbeat_interval: float = 10.0,
) -> AsyncIterator[tuple[Launcher, RequestWorker]]:
    """A launcher running a RequestWorker on ``QUEUE``; callbacks go to ``CALLBACKS``.

    ``max_connections`` (the worker's capacity) defaults to ``concurrency`` (the processor's
    slots), the normal configuration; ``settings`` replaces every other option, ``worker``
    replaces the worker itself. Leaving stops the launcher and waits for it to return.
    """
    if settings is None:
        settings = RequestWorkerSettings(
            http=replace(
                http or HttpSettings(),
                max_connections=concurrency if max_connections is None else max_connections,
            ),
            payloads=payloads or PayloadSettings(),
            routing=routing or CallbackRouting(callback_queue=CALLBACKS),
        )
    worker = worker if worker is not None else RequestWorker(settings)
    launcher = Launcher(
        WorkerSettings(
            redis_url=redis_url,
            queues=[(QUEUE, 0)],
            concurrency=concurrency,
            shutdown_timeout=shutdown_timeout,
            recovery_interval=recovery_interval,
            heartbeat_interval=heartbeat_interval,
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


@asynccontextmanager
async def redis_store(
    redis_url: str, **kwargs: Any
) -> AsyncIterator[tuple[PayloadSettings, RedisBridge]]:
    """Payload settings whose default store is a RedisPayloadStore on the test Redis."""
    async with RedisBridge(redis_url) as bridge:
        yield (
            PayloadSettings(
                stores={"redis": RedisPayloadStore(bridge)}, default_store="redis", **kwargs
            ),
            bridge,
        )


async def stored_request_job(url: str, payloads: PayloadSettings) -> tuple[Job, str]:
    """A gem-shaped job whose request lives in the Redis store; and the stored key."""
    reference = await pack(request_data(url), payloads)
    return request_job(url, data=reference), keys.payload_key(reference["$ref"]["key"])


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
    with pytest.raises(JobArgumentError, match=r"given 4, expected 5\.\.6"):
        RequestCall.from_args([{}, "C", None, None])
    with pytest.raises(JobArgumentError, match="callback name"):
        RequestCall.from_args([{}, 5, None, None, "id"])
    with pytest.raises(JobArgumentError, match="raise_error_responses"):
        RequestCall.from_args([{}, "C", "yes", None, "id"])
    call = RequestCall.from_args([{}, "C", None, {"a": 1}, None])
    assert call.callback_args == {"a": 1}
    # Later gem releases add an optional processor name; it is accepted and ignored.
    assert RequestCall.from_args([{}, "C", None, None, "id", "default"]).request_id == "id"
    with pytest.raises(JobArgumentError, match="processor name"):
        RequestCall.from_args([{}, "C", None, None, "id", 5])


# --- 1. bad input: filed as Ruby Sidekiq would, never lost, never fatal ---


def assert_retried(job: Job, original: Job, error_class: str, message: str) -> None:
    """``job`` is ``original`` filed into ``retry`` for the first time by Sidekiq's rules."""
    assert job["class"] == REQUEST_WORKER
    assert job.args == original.args
    assert job.queue == QUEUE
    assert job["error_class"] == error_class
    assert message in job["error_message"], job["error_message"]
    assert job.retry_count == 0
    assert isinstance(job["failed_at"], float)
    assert job["retry"] is True


async def test_bad_arguments_and_payloads_are_retried_and_the_worker_goes_on(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    url = http_server.url("/echo")
    bad: dict[str, tuple[Job, str, str]] = {}

    def add(job: Job, error_class: str, message: str) -> None:
        bad[str(job.jid)] = (job, error_class, message)

    add(
        Job.new(REQUEST_WORKER, [request_data(url), "Cb"], queue=QUEUE, jid="a" * 24),
        "ArgumentError",
        "wrong number of arguments (given 2, expected 5..6)",
    )
    add(
        Job.new(REQUEST_WORKER, [*request_job(url).args, "x", 1], queue=QUEUE, jid="b" * 24),
        "ArgumentError",
        "wrong number of arguments (given 7, expected 5..6)",
    )
    add(request_job(url, callback=42, jid="c" * 24), "ArgumentError", "callback name")
    add(
        request_job(url, raise_error_responses="yes", jid="d" * 24),
        "ArgumentError",
        "raise_error_responses",
    )
    add(request_job(url, callback_args=[1, 2], jid="e" * 24), "ArgumentError", "callback_args")
    add(
        request_job(url, data="GET /echo", jid="f" * 24),
        "ArgumentError",
        "request data must be a JSON object",
    )
    add(
        request_job(url, method="trace", jid="1" * 24),
        "ArgumentError",
        "http_method must be one of",
    )
    no_url = request_data(url)
    del no_url["url"]
    add(
        request_job(url, data=no_url, jid="2" * 24),
        "ArgumentError",
        "url is required",
    )
    add(
        request_job(url, data=ENCRYPTOR.encrypt(request_data(url)), jid="3" * 24),
        "ArgumentError",
        "no encryption key is configured",
    )
    add(
        request_job(url, data={"$ref": {"store": "s3", "key": "k"}}, jid="4" * 24),
        "PatientHttp::ExternalStorage::PayloadStoreNotFoundError",
        "Payload store 's3' not registered",
    )
    add(
        Job.new(
            REQUEST_WORKER, [request_data(url), "Cb", None, None, 7], queue=QUEUE, jid="5" * 24
        ),
        "ArgumentError",
        "request_id must be a non-empty string or null, got a number",
    )
    not_json = '{"class":"PatientHttp::Sidekiq::RequestWorker","args":[{'
    good = request_job(url, jid="9" * 24)
    async with running_worker(redis_url, concurrency=4):
        redis_client.lpush(
            keys.queue(QUEUE), *[job.raw for job, _, _ in bad.values()], not_json, good.raw
        )
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
        await eventually(lambda: redis_client.zcard(keys.RETRY) == len(bad))
        await eventually(lambda: redis_client.zcard(keys.DEAD) == 1)
        assert redis_client.llen(keys.queue(QUEUE)) == 0
    retried = retry_jobs(redis_client)
    assert set(retried) == set(bad)
    for jid, (original, error_class, message) in bad.items():
        assert_retried(retried[jid], original, error_class, message)
    # Not JSON: wrapped with a Ruby error, the original text kept (poison.py).
    [dead] = [json.loads(raw) for raw in redis_client.zrange(keys.DEAD, 0, -1)]
    assert (dead["error_class"], dead["patient_sidekiq_raw"]) == ("JSON::ParserError", not_json)
    [callback] = callback_jobs(redis_client)
    assert callback.args[1] == "response"
    assert callback.args[0]["status"] == 200
    # Nothing was left half-done: no in-flight record, no request counted for the bad ones.
    assert redis_client.hlen(keys.INFLIGHT_JOBS) == 0
    assert redis_client.zcard(keys.INFLIGHT_INDEX) == 0
    assert totals_of(redis_client)["requests"] == "1"


async def test_undecryptable_and_missing_stored_payloads_are_retried(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    url = http_server.url("/echo")
    other_key = MessageEncryptor("some-other-key")
    async with redis_store(redis_url, encryptor=ENCRYPTOR) as (payloads, _):
        wrong_key = request_job(url, data=other_key.encrypt(request_data(url)), jid="a" * 24)
        missing = request_job(
            url,
            data={"$ref": {"store": "redis", "key": "0e9c3a8e-0000-4000-8000-000000000000"}},
            jid="b" * 24,
        )
        garbage_key = keys.payload_key("6f0c2d1e-0000-4000-8000-000000000000")
        redis_client.set(garbage_key, '{"http_method": "get", "url": ')
        garbage = request_job(
            url,
            data={"$ref": {"store": "redis", "key": "6f0c2d1e-0000-4000-8000-000000000000"}},
            jid="d" * 24,
        )
        envelope = ENCRYPTOR.encrypt(request_data(url))
        tampered_value = base64.b64decode(envelope["value"]).decode()
        tampered_value = ("A" if tampered_value[0] != "A" else "B") + tampered_value[1:]
        tampered = request_job(
            url,
            data={**envelope, "value": base64.b64encode(tampered_value.encode()).decode()},
            jid="e" * 24,
        )
        good = request_job(url, data=await pack(request_data(url), payloads), jid="c" * 24)
        bad = [wrong_key, missing, garbage, tampered]
        async with running_worker(redis_url, payloads=payloads):
            redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in bad], good.raw)
            await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
            await eventually(lambda: redis_client.zcard(keys.RETRY) == len(bad))
        retried = retry_jobs(redis_client)
        assert_retried(
            retried["a" * 24],
            wrong_key,
            "ArgumentError",
            "no configured key verifies this message",
        )
        assert_retried(
            retried["b" * 24],
            missing,
            "PatientHttp::ExternalStorage::PayloadNotFoundError",
            "Stored payload not found: redis/0e9c3a8e-0000-4000-8000-000000000000",
        )
        assert_retried(retried["d" * 24], garbage, "JSON::ParserError", "not valid JSON")
        assert redis_client.exists(garbage_key) == 1  # kept for the retries
        assert_retried(
            retried["e" * 24],
            tampered,
            "ArgumentError",
            "wrong key or tampered data",
        )
        [callback] = callback_jobs(redis_client)
        assert callback.args[1] == "response"
        response = (await unpack(callback.args[0], payloads)).data
        assert response["status"] == 200


async def test_a_retried_bad_job_counts_its_retries(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    # A job that already failed once (as it comes back from the retry set) gets retry_count 1.
    first = request_job(http_server.url("/echo"), callback=None, jid="a" * 24)
    again = first.with_fields(
        error_class="ArgumentError", error_message="x", failed_at=1.0, retry_count=0
    )
    before = time.time()
    async with running_worker(redis_url, concurrency=2):
        redis_client.lpush(keys.queue(QUEUE), again.raw)
        await eventually(lambda: redis_client.zcard(keys.RETRY) == 1)
    [(raw, score)] = cast(
        list[tuple[bytes, float]], redis_client.zrange(keys.RETRY, 0, -1, withscores=True)
    )
    job = Job.parse(raw)
    assert job.retry_count == 1
    assert job["failed_at"] == 1.0
    assert isinstance(job["retried_at"], float)
    assert job["error_class"] == "ArgumentError"
    assert "callback name must be a non-empty string, got null" in job["error_message"]
    assert score >= before + 16  # retry_count**4 + 15 + jitter seconds after the failure


# --- 2. capacity ---


async def test_more_slots_than_max_connections_refuses_with_max_capacity_error(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    slow = numbered_job(http_server.url("/slow?seconds=1"), 1)
    refused = numbered_job(http_server.url("/echo"), 2)
    async with running_worker(redis_url, concurrency=2, max_connections=1) as (_, worker):
        redis_client.lpush(keys.queue(QUEUE), slow.raw)
        await eventually(lambda: redis_client.hlen(keys.INFLIGHT_JOBS) == 1)
        assert worker.in_flight == 1
        redis_client.lpush(keys.queue(QUEUE), refused.raw)
        await eventually(lambda: redis_client.zcard(keys.RETRY) == 1)
        assert redis_client.hget(keys.TOTALS, "max_capacity_exceeded") == b"1"
        # The refused job never reached the in-flight keys; the slow one is still there.
        assert redis_client.hlen(keys.INFLIGHT_JOBS) == 1
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
    [job] = retry_jobs(redis_client).values()
    assert_retried(
        job,
        refused,
        "PatientHttp::MaxCapacityError",
        "Cannot enqueue request: already at max capacity (1 connections)",
    )
    assert job["error_message"] == (
        "Cannot enqueue request: already at max capacity (1 connections)"
    )
    assert list(callbacks_by_n(redis_client)) == [1]
    stats = totals_of(redis_client)
    assert stats["max_capacity_exceeded"] == "1"
    assert stats["requests"] == "1"  # a refusal is not a request
    assert redis_client.ttl(keys.TOTALS) > TOTALS_TTL - 60


async def test_slots_equal_to_max_connections_never_refuse_a_backlog(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    count = 30
    jobs = [numbered_job(http_server.url("/slow?seconds=0.05"), n) for n in range(count)]
    async with running_worker(redis_url, concurrency=4):
        redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in jobs])
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == count)
        # Claim markers are deleted by later claims: never one per request left behind.
        assert len(redis_client.keys(keys.claim_marker("*"))) <= 4
    assert redis_client.keys(keys.claim_marker("*")) == []  # and the last ones on leaving
    assert redis_client.zcard(keys.RETRY) == 0
    assert redis_client.hget(keys.TOTALS, "max_capacity_exceeded") is None
    callbacks = callbacks_by_n(redis_client)
    assert sorted(callbacks) == list(range(count))
    assert all(job.args[1] == "response" for job in callbacks.values())
    assert totals_of(redis_client)["requests"] == str(count)
    assert redis_client.hlen(keys.INFLIGHT_JOBS) == 0


# --- 3. results ---


def golden_result_keys(golden: dict[str, Any], name: str) -> list[str]:
    return list(golden["jobs"][name]["args"][0])


async def test_responses_carry_status_headers_and_each_body_encoding(
    redis_url: str, redis_client: redis.Redis, http_server: Server, golden: dict[str, Any]
) -> None:
    long_text = "é" + "a" * 5000
    jobs = [
        numbered_job(http_server.url("/echo?x=1"), 1, headers={"x-custom": "yes"}),
        numbered_job(http_server.url("/big?bytes=3000"), 2),
        numbered_job(
            http_server.url("/echo"),
            3,
            method="post",
            headers={"content-type": "text/plain"},
            body={"encoding": "text", "value": long_text, "charset": "UTF-8"},
        ),
        numbered_job(http_server.url("/gzip"), 4),
        numbered_job(http_server.url("/multi"), 5),
        request_job(
            http_server.url("/echo"), request_id=None, jid="6" * 24, callback_args={"n": 6}
        ),
    ]
    async with running_worker(redis_url):
        redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in jobs])
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == len(jobs))
    callbacks = callbacks_by_n(redis_client)
    results = {n: job.args[0] for n, job in callbacks.items()}
    for n, job in callbacks.items():
        assert job.args[1:] == ["response", "OracleCallback"]
        assert list(job.args[0]) == golden_result_keys(golden, "CallbackWorker_response")
        assert all(name == name.lower() for name in job.args[0]["headers"])
        assert job.args[0]["status"] == 200
        if n != 6:
            assert job.args[0]["request_id"] == f"00000000-0000-4000-8000-{n:012x}"
        assert job.args[0]["callback_args"] == {"n": n}
        assert job.args[0]["redirects"] == []
        assert isinstance(job.args[0]["duration"], float)

    echo = results[1]
    assert echo["url"] == http_server.url("/echo?x=1")
    assert echo["http_method"] == "get"
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["body"]["encoding"] == "text"
    assert echo["body"]["charset"] == "UTF-8"
    sent = json.loads(echo["body"]["value"])
    assert sent["method"] == "GET"
    assert sent["query"] == "x=1"
    sent_headers = dict(sent["headers"])
    assert sent_headers["x-custom"] == "yes"
    assert sent_headers["x-request-id"] == "00000000-0000-4000-8000-000000000001"
    assert sent_headers["user-agent"] == "PatientHttp"

    big = results[2]
    assert big["headers"]["content-type"] == "application/octet-stream"
    assert "content-length" not in big["headers"]  # consumed by the HTTP client, as the gem's
    assert big["body"]["encoding"] == "binary"
    assert big["body"]["charset"] == "ASCII-8BIT"
    assert body_bytes(big["body"]) == b"x" * 3000

    posted = results[3]
    assert posted["http_method"] == "post"
    assert posted["body"]["encoding"] == "gzipped"  # JSON text over 4096 bytes
    assert posted["body"]["charset"] == "UTF-8"
    echoed = json.loads(body_bytes(posted["body"]))
    assert echoed["method"] == "POST"
    assert echoed["body"].encode("latin-1").decode("utf-8") == long_text

    gzipped = results[4]
    assert "content-encoding" not in gzipped["headers"]  # decoded, as the gem does
    assert gzipped["body"] == {"encoding": "text", "value": '{"gzipped": true}', "charset": "UTF-8"}

    # No request id in the job: the processor makes up a UUID and sends it.
    generated = results[6]["request_id"]
    assert uuid.UUID(generated).version == 4
    assert str(uuid.UUID(generated)) == generated
    assert dict(json.loads(results[6]["body"]["value"])["headers"])["x-request-id"] == generated

    multi = results[5]
    assert multi["headers"]["x-multi"] == "one, two"
    assert multi["headers"]["set-cookie"] == "a=1; Path=/\nb=2; Path=/"


async def test_error_responses_follow_raise_error_responses_and_the_default(
    redis_url: str, redis_client: redis.Redis, http_server: Server, golden: dict[str, Any]
) -> None:
    url = http_server.url("/status/503")
    jobs = [
        numbered_job(url, 1, raise_error_responses=True),
        numbered_job(url, 2, raise_error_responses=False),
        # null is false in the gem's processor, whatever its configured default
        numbered_job(url, 3, raise_error_responses=None),
        numbered_job(http_server.url("/status/404"), 4, raise_error_responses=None),
        numbered_job(http_server.url("/status/204"), 5, raise_error_responses=True),
    ]
    async with running_worker(redis_url, http=HttpSettings(raise_error_responses=True)):
        redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in jobs])
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == len(jobs))
    callbacks = callbacks_by_n(redis_client)
    kinds = {n: job.args[1] for n, job in callbacks.items()}
    assert kinds == {1: "error", 2: "response", 3: "response", 4: "response", 5: "response"}
    error = callbacks[1].args[0]
    assert list(error) == golden_result_keys(golden, "CallbackWorker_http_error")
    assert list(error["response"]) == list(
        golden["jobs"]["CallbackWorker_http_error"]["args"][0]["response"]
    )
    response = error["response"]
    assert response["status"] == 503
    assert response["url"] == url
    assert response["request_id"] == "00000000-0000-4000-8000-000000000001"
    assert response["callback_args"] == {"n": 1}
    assert body_bytes(response["body"]) == b"status 503"
    assert callbacks[2].args[0]["status"] == 503
    assert callbacks[4].args[0]["status"] == 404
    assert callbacks[5].args[0]["status"] == 204
    assert callbacks[5].args[0]["body"] is None


async def test_plain_defaults_deliver_error_statuses_to_on_complete(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    job = numbered_job(http_server.url("/status/503"), 1, raise_error_responses=None)
    async with running_worker(redis_url):  # HttpSettings().raise_error_responses is False
        redis_client.lpush(keys.queue(QUEUE), job.raw)
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
    [callback] = callback_jobs(redis_client)
    assert callback.args[1] == "response"
    assert callback.args[0]["status"] == 503


async def test_transport_failures_become_request_errors(
    redis_url: str,
    redis_client: redis.Redis,
    http_server: Server,
    reset_server: Server,
    golden: dict[str, Any],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/nothing"
    jobs = [
        numbered_job(closed, 1),
        numbered_job(http_server.url("/slow?seconds=3"), 2, timeout=0.2),
        numbered_job(http_server.url("/big?bytes=5000"), 3),
        numbered_job(http_server.url("/big?bytes=5000&length=0"), 4),
        numbered_job(reset_server.url("/"), 5),
    ]
    http = HttpSettings(max_response_size=1000)
    async with running_worker(redis_url, http=http):
        redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in jobs])
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == len(jobs))
    callbacks = callbacks_by_n(redis_client)
    expected_types = {
        1: "connection",
        2: "timeout",
        3: "response_too_large",
        4: "response_too_large",
        5: "connection",
    }
    for n, job in callbacks.items():
        data = job.args[0]
        assert job.args[1:] == ["error", "OracleCallback"]
        assert list(data) == golden_result_keys(golden, "CallbackWorker_request_error")
        assert data["error_type"] == expected_types[n], data
        assert data["request_id"] == f"00000000-0000-4000-8000-{n:012x}"
        assert data["callback_args"] == {"n": n}
        assert data["http_method"] == "get"
        assert isinstance(data["class_name"], str)
        assert data["class_name"]
        assert isinstance(data["message"], str)
        assert data["message"]
        assert all(isinstance(line, str) for line in data["backtrace"])
        assert isinstance(data["duration"], float)
    assert callbacks[1].args[0]["url"] == closed
    timeout = callbacks[2].args[0]
    assert 0.15 < timeout["duration"] < 2.0
    stats = totals_of(redis_client)
    assert stats["errors"] == "5"
    assert stats["errors:exception"] == "5"
    assert stats["requests"] == "5"
    assert not any(name.startswith("http_status:") for name in stats)


async def test_https_with_the_configured_ca_and_without_it(
    redis_url: str, redis_client: redis.Redis, tls_server: Server, tls_certs: TlsCerts
) -> None:
    job = numbered_job(tls_server.url("/echo"), 1)
    trusted = HttpSettings(ca_bundle=str(tls_certs.ca_file))
    async with running_worker(redis_url, http=trusted):
        redis_client.lpush(keys.queue(QUEUE), job.raw)
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
    [ok] = callback_jobs(redis_client)
    assert ok.args[1] == "response"
    assert ok.args[0]["status"] == 200
    assert json.loads(ok.args[0]["body"]["value"])["http_version"] == "2"
    redis_client.delete(keys.queue(CALLBACKS))
    async with running_worker(redis_url, http=HttpSettings(retries=0)):
        redis_client.lpush(keys.queue(QUEUE), job.raw)
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
    [failed] = callback_jobs(redis_client)
    assert failed.args[1] == "error"
    assert failed.args[0]["error_type"] == "ssl"
    assert failed.args[0]["url"] == tls_server.url("/echo")


async def test_redirects_are_followed_and_too_many_redirects_is_an_error(
    redis_url: str, redis_client: redis.Redis, http_server: Server, golden: dict[str, Any]
) -> None:
    jobs = [
        numbered_job(http_server.url("/redirect/2"), 1),
        numbered_job(http_server.url("/redirect/3"), 2, max_redirects=1),
        numbered_job(http_server.url("/redirect/2"), 3, max_redirects=0),
    ]
    async with running_worker(redis_url):
        redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in jobs])
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == len(jobs))
    callbacks = callbacks_by_n(redis_client)
    followed = callbacks[1].args[0]
    assert callbacks[1].args[1] == "response"
    assert followed["status"] == 200
    assert followed["url"] == http_server.url("/redirect/0")
    assert followed["redirects"] == [
        http_server.url("/redirect/2"),
        http_server.url("/redirect/1"),
    ]
    assert followed["request_id"] == "00000000-0000-4000-8000-000000000001"
    echo = json.loads(followed["body"]["value"])
    assert dict(echo["headers"])["x-request-id"] == "00000000-0000-4000-8000-000000000001/3"

    assert callbacks[2].args[1] == "error"
    error = callbacks[2].args[0]
    assert list(error) == golden_result_keys(golden, "CallbackWorker_too_many_redirects")
    assert error["error_class"] == "PatientHttp::TooManyRedirectsError"
    assert error["redirects"] == [http_server.url("/redirect/3"), http_server.url("/redirect/2")]
    assert error["http_method"] == "get"
    assert error["callback_args"] == {"n": 2}
    assert error["request_id"].startswith("00000000-0000-4000-8000-000000000002")

    not_followed = callbacks[3].args[0]
    assert callbacks[3].args[1] == "response"
    assert not_followed["status"] == 302
    assert not_followed["headers"]["location"] == "/redirect/1"
    assert not_followed["redirects"] == []


# --- 4. stats ---


async def test_totals_count_every_hop_and_every_error_kind(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    jobs = [
        numbered_job(http_server.url("/redirect/2"), 1),  # 2 hops + the final exchange
        numbered_job(http_server.url("/status/503"), 2, raise_error_responses=True),
        numbered_job(http_server.url("/redirect/3"), 3, max_redirects=1),  # 1 hop + refused one
        numbered_job(f"http://127.0.0.1:{free_port()}/", 4),
        numbered_job(http_server.url("/status/404"), 5),  # a response, not an error
    ]
    async with running_worker(redis_url, http=HttpSettings(retries=0)):
        redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in jobs])
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == len(jobs))
    stats = totals_of(redis_client)
    duration = stats.pop("duration")
    # Only responses delivered to on_complete count their status (the gem's rule): not the
    # followed 302 hops, not the HttpError's 503.
    assert stats == {
        "requests": "8",
        "http_status:200": "1",
        "http_status:404": "1",
        "errors": "3",
        "errors:http_error": "1",
        "errors:redirect": "1",
        "errors:exception": "1",
    }
    # A float sum of at least every reported duration (hops add their own).
    callbacks = callbacks_by_n(redis_client)
    reported = sum(
        (job.args[0]["response"] if "response" in job.args[0] else job.args[0])["duration"]
        for job in callbacks.values()
    )
    assert float(duration) >= reported - 1e-6
    assert float(duration) > 0
    ttl = redis_client.ttl(keys.TOTALS)
    assert TOTALS_TTL - 60 < ttl <= TOTALS_TTL


async def test_redirect_chain_counts_each_hop_as_a_request(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    async with running_worker(redis_url):
        redis_client.lpush(keys.queue(QUEUE), request_job(http_server.url("/redirect/2")).raw)
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
    stats = totals_of(redis_client)
    assert float(stats.pop("duration")) > 0
    assert stats == {"requests": "3", "http_status:200": "1"}  # hops count no status


# --- 5. routing ---


async def test_callbacks_are_routed_to_the_ruby_or_the_python_queue(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    routing = CallbackRouting(
        callback_queue="cb",
        python_callback_queue="pycb",
        is_python_callback=lambda name: name == "Py::Callback",
    )
    jobs = [
        numbered_job(http_server.url("/status/200"), 1, callback="Py::Callback"),
        numbered_job(http_server.url("/status/200"), 2, callback="Ruby::Callback"),
        numbered_job(f"http://127.0.0.1:{free_port()}/", 3, callback="Py::Callback"),  # errors too
        numbered_job(f"http://127.0.0.1:{free_port()}/", 4, callback="Py::CallbackX"),
    ]
    async with running_worker(redis_url, routing=routing, http=HttpSettings(retries=0)):
        redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in jobs])
        await eventually(
            lambda: redis_client.llen("queue:cb") + redis_client.llen("queue:pycb") == len(jobs)
        )
    python = callbacks_by_n(redis_client, "pycb")
    ruby = callbacks_by_n(redis_client, "cb")
    assert sorted(python) == [1, 3]
    assert sorted(ruby) == [2, 4]
    assert all(job.queue == "pycb" for job in python.values())
    assert all(job.queue == "cb" for job in ruby.values())
    assert [job.args[1:] for _, job in sorted(python.items())] == [
        ["response", "Py::Callback"],
        ["error", "Py::Callback"],
    ]
    assert redis_client.llen(keys.queue(CALLBACKS)) == 0
    assert {b"cb", b"pycb"} <= redis_client.smembers(keys.QUEUES)


# --- 6. encryption and external storage ---


async def test_encrypted_request_gives_an_encrypted_result(
    redis_url: str, redis_client: redis.Redis, http_server: Server, golden: dict[str, Any]
) -> None:
    payloads = PayloadSettings(encryptor=ENCRYPTOR)
    url = http_server.url("/echo")
    envelope = await pack(request_data(url, headers={"authorization": "Bearer t"}), payloads)
    assert list(envelope) == ["__encrypted__", "value"]
    job = request_job(url, data=envelope, callback_args={"k": "v"})
    async with running_worker(redis_url, payloads=payloads):
        redis_client.lpush(keys.queue(QUEUE), job.raw)
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
    [callback] = callback_jobs(redis_client)
    assert callback.args[1:] == ["response", "OracleCallback"]
    packed = callback.args[0]
    assert list(packed) == ["__encrypted__", "value"]
    assert packed["__encrypted__"] is True
    assert "Bearer" not in callback.raw
    # Readable by the gem's own key (golden encryption password).
    ruby_side = MessageEncryptor(golden["encryption"]["kdf"]["password"])
    response = ruby_side.decrypt(packed)
    assert response == (await unpack(packed, payloads)).data
    assert list(response) == golden_result_keys(golden, "CallbackWorker_response")
    assert response["status"] == 200
    assert response["callback_args"] == {"k": "v"}
    assert response["url"] == url
    assert dict(json.loads(response["body"]["value"])["headers"])["authorization"] == "Bearer t"


async def test_stored_request_is_deleted_only_after_its_result_is_in_redis(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    async with redis_store(redis_url, store_threshold=10) as (payloads, _):
        url = http_server.url("/slow?seconds=0.5")
        job, request_key = await stored_request_job(url, payloads)
        assert list(job.args[0]) == ["$ref"]
        async with running_worker(redis_url, payloads=payloads) as (_, worker):
            redis_client.lpush(keys.queue(QUEUE), job.raw)
            await eventually(lambda: redis_client.hlen(keys.INFLIGHT_JOBS) == 1)
            # In flight: the record holds the $ref job, so the payload must still be there.
            member = f"{worker.process_id}/00000000-0000-4000-8000-000000000001"
            assert redis_client.hget(keys.INFLIGHT_JOBS, member) == job.raw.encode()
            assert redis_client.exists(request_key) == 1
            await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
            await eventually(lambda: redis_client.exists(request_key) == 0)
        [callback] = callback_jobs(redis_client)
        stored = callback.args[0]
        assert list(stored) == ["$ref"]
        assert stored["$ref"]["store"] == "redis"
        result_key = keys.payload_key(stored["$ref"]["key"])
        assert result_key != request_key
        assert redis_client.exists(result_key) == 1  # the CallbackWorker deletes it later
        response = json.loads(cast(bytes, redis_client.get(result_key)))
        assert response == (await unpack(stored, payloads)).data
        assert response["status"] == 200
        assert body_bytes(response["body"]) == b"slow"


async def test_encrypted_and_stored_result_keeps_the_gems_order(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    async with redis_store(redis_url, encryptor=ENCRYPTOR, store_threshold=10) as (payloads, _):
        job = request_job(
            http_server.url("/echo"),
            data=await pack(request_data(http_server.url("/echo")), payloads),
        )
        async with running_worker(redis_url, payloads=payloads):
            redis_client.lpush(keys.queue(QUEUE), job.raw)
            await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
        [callback] = callback_jobs(redis_client)
        stored = callback.args[0]
        # Encrypt first, then store: the stored text is the envelope (spec §1, §6).
        envelope = json.loads(
            cast(bytes, redis_client.get(keys.payload_key(stored["$ref"]["key"])))
        )
        assert list(envelope) == ["__encrypted__", "value"]
        assert ENCRYPTOR.decrypt(envelope)["status"] == 200
        assert (await unpack(stored, payloads)).data["status"] == 200
        # Only the result remains stored; the request's payload is gone.
        assert len(redis_client.keys(keys.payload_key("*"))) == 1


# --- 7. hand-off ---


async def test_hand_off_moves_the_job_from_in_progress_to_the_inflight_keys(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    job = request_job(http_server.url("/slow?seconds=0.5"))
    async with running_worker(redis_url) as (launcher, worker):
        inprogress = keys.inprogress(launcher.identity, QUEUE)
        member = f"{worker.process_id}/00000000-0000-4000-8000-000000000001"
        redis_client.lpush(keys.queue(QUEUE), job.raw)
        await eventually(lambda: redis_client.hlen(keys.INFLIGHT_JOBS) == 1)
        now_ms = time.time() * 1000
        assert redis_client.lrange(inprogress, 0, -1) == []
        assert redis_client.llen(keys.queue(QUEUE)) == 0
        assert redis_client.hgetall(keys.INFLIGHT_JOBS) == {member.encode(): job.raw.encode()}
        [(index_member, score)] = cast(
            list[tuple[bytes, float]],
            redis_client.zrange(keys.INFLIGHT_INDEX, 0, -1, withscores=True),
        )
        assert index_member == member.encode()
        assert abs(score - now_ms) < 10_000  # epoch milliseconds, not seconds
        assert 3590 <= redis_client.ttl(keys.INFLIGHT_JOBS) <= 3600  # max(3 x 300 s, 1 h)
        assert 3590 <= redis_client.ttl(keys.INFLIGHT_INDEX) <= 3600
        assert worker.in_flight == 1
        # The process is announced in the gem's keys with its capacity.
        assert redis_client.sismember(keys.GEM_PROCESSES, worker.process_id)
        max_connections_key = keys.gem_process_max_connections(worker.process_id)
        assert redis_client.get(max_connections_key) == b"16"
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
        assert redis_client.hlen(keys.INFLIGHT_JOBS) == 0
        assert redis_client.zcard(keys.INFLIGHT_INDEX) == 0
        assert redis_client.llen(inprogress) == 0
        await eventually(lambda: worker.in_flight == 0)
    assert redis_client.zcard(keys.RETRY) == 0
    assert redis_client.zcard(keys.DEAD) == 0
    assert redis_client.llen(keys.queue(QUEUE)) == 0
    # Leaving: out of the processes set, max_connections key deleted.
    assert not redis_client.sismember(keys.GEM_PROCESSES, worker.process_id)
    assert redis_client.exists(max_connections_key) == 0


# --- 8. quiet ---


async def test_quiet_fetches_nothing_new_but_delivers_what_is_in_flight(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    in_flight = [numbered_job(http_server.url("/slow?seconds=0.5"), n) for n in (1, 2)]
    late = numbered_job(http_server.url("/echo"), 3)
    async with running_worker(redis_url, concurrency=4) as (launcher, _):
        inprogress = keys.inprogress(launcher.identity, QUEUE)
        redis_client.lpush(keys.queue(QUEUE), *[job.raw for job in in_flight])
        await eventually(lambda: redis_client.hlen(keys.INFLIGHT_JOBS) == 2)
        launcher.quiet()
        redis_client.lpush(keys.queue(QUEUE), late.raw)
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 2)
        # A fetch that was already waiting may catch the job, but must give it back.
        await eventually(
            lambda: (
                redis_client.lrange(keys.queue(QUEUE), 0, -1) == [late.raw.encode()]
                and redis_client.llen(inprogress) == 0
            )
        )
        assert sorted(callbacks_by_n(redis_client)) == [1, 2]
    assert redis_client.lrange(keys.queue(QUEUE), 0, -1) == [late.raw.encode()]
    assert sorted(callbacks_by_n(redis_client)) == [1, 2]
    assert redis_client.hlen(keys.INFLIGHT_JOBS) == 0
    assert redis_client.zcard(keys.RETRY) == 0


# --- shutdown and lost claims (spec §7, §9) ---


async def test_hard_shutdown_requeues_the_original_job_exactly_once(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    async with redis_store(redis_url, store_threshold=10) as (payloads, _):
        url = http_server.url("/slow?seconds=5")
        job, request_key = await stored_request_job(url, payloads)
        async with running_worker(redis_url, payloads=payloads, shutdown_timeout=0.2) as (
            launcher,
            _,
        ):
            inprogress = keys.inprogress(launcher.identity, QUEUE)
            redis_client.lpush(keys.queue(QUEUE), job.raw)
            await eventually(lambda: redis_client.hlen(keys.INFLIGHT_JOBS) == 1)
        [raw] = redis_client.lrange(keys.queue(QUEUE), 0, -1)
        again = Job.parse(raw)
        assert again.jid == job.jid
        assert again.class_name == REQUEST_WORKER
        assert again.args == job.args  # still the $ref: its payload must still exist
        assert again.queue == QUEUE
        assert again["created_at"] == job["created_at"]
        assert isinstance(again["enqueued_at"], float)
        assert redis_client.exists(request_key) == 1
        assert redis_client.llen(keys.queue(CALLBACKS)) == 0
        assert redis_client.llen(inprogress) == 0
        assert redis_client.hlen(keys.INFLIGHT_JOBS) == 0
        assert redis_client.zcard(keys.INFLIGHT_INDEX) == 0
        assert redis_client.zcard(keys.RETRY) == 0
        assert redis_client.exists(keys.TOTALS) == 0


async def test_result_is_dropped_when_another_process_claimed_the_task(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    async with redis_store(redis_url, store_threshold=10) as (payloads, _):
        url = http_server.url("/slow?seconds=0.5")
        job, request_key = await stored_request_job(url, payloads)
        async with running_worker(redis_url, payloads=payloads) as (_, worker):
            member = f"{worker.process_id}/00000000-0000-4000-8000-000000000001"
            redis_client.lpush(keys.queue(QUEUE), job.raw)
            await eventually(lambda: redis_client.hlen(keys.INFLIGHT_JOBS) == 1)
            # What another process's orphan sweep does before re-enqueueing the job.
            assert redis_client.hdel(keys.INFLIGHT_JOBS, member) == 1
            assert redis_client.zrem(keys.INFLIGHT_INDEX, member) == 1
            await eventually(lambda: worker.in_flight == 0)
        assert redis_client.llen(keys.queue(CALLBACKS)) == 0
        assert redis_client.exists(keys.TOTALS) == 0
        # The re-enqueued job still needs its request; the unused stored result is gone.
        assert redis_client.keys(keys.payload_key("*")) == [request_key.encode()]
        assert redis_client.zcard(keys.RETRY) == 0


async def test_unexpected_failure_after_the_hand_off_files_the_original_job(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    def broken(name: str) -> bool:
        raise ZeroDivisionError("routing hook failed")

    routing = CallbackRouting(callback_queue=CALLBACKS, is_python_callback=broken)
    job = request_job(http_server.url("/echo"))
    async with running_worker(redis_url, routing=routing) as (launcher, worker):
        redis_client.lpush(keys.queue(QUEUE), job.raw)
        await eventually(lambda: redis_client.zcard(keys.RETRY) == 1)
        await eventually(lambda: worker.in_flight == 0)
        assert redis_client.llen(keys.inprogress(launcher.identity, QUEUE)) == 0
    [filed] = retry_jobs(redis_client).values()
    assert_retried(filed, job, "ZeroDivisionError", "routing hook failed")
    assert filed.jid == job.jid
    assert redis_client.hlen(keys.INFLIGHT_JOBS) == 0
    assert redis_client.zcard(keys.INFLIGHT_INDEX) == 0
    assert redis_client.llen(keys.queue(CALLBACKS)) == 0
    assert redis_client.llen(keys.queue(QUEUE)) == 0


async def test_heartbeat_refreshes_the_score_of_a_running_request(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    settings = RequestWorkerSettings(
        http=HttpSettings(max_connections=4),
        routing=CallbackRouting(callback_queue=CALLBACKS),
        heartbeat_interval=0.1,
    )
    job = request_job(http_server.url("/slow?seconds=1"))
    async with running_worker(redis_url, settings=settings, concurrency=4) as (_, worker):
        member = f"{worker.process_id}/00000000-0000-4000-8000-000000000001"
        redis_client.lpush(keys.queue(QUEUE), job.raw)
        await eventually(lambda: redis_client.zscore(keys.INFLIGHT_INDEX, member) is not None)
        first = cast(float, redis_client.zscore(keys.INFLIGHT_INDEX, member))
        await eventually(
            lambda: (redis_client.zscore(keys.INFLIGHT_INDEX, member) or 0) >= first + 200
        )
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)

        # Beats after the claim (each ends with a sweep stamping gc_last_run) must not bring
        # the finished task back (ZADD XX).
        def swept_since(last: Any) -> Callable[[], bool]:
            return lambda: redis_client.get(keys.GC_LAST_RUN) not in (None, last)

        for _ in range(2):
            await eventually(swept_since(redis_client.get(keys.GC_LAST_RUN)))
        assert redis_client.zcard(keys.INFLIGHT_INDEX) == 0
        assert redis_client.hlen(keys.INFLIGHT_JOBS) == 0


async def test_requests_of_a_dead_process_are_recovered_and_run(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    stale_ms = round(time.time() * 1000) - 600_000  # older than the 300 s orphan threshold
    dead = numbered_job(http_server.url("/echo"), 1)
    dead_member = "deadhost:41:0123456789abcdef/00000000-0000-4000-8000-000000000001"
    live = numbered_job(http_server.url("/echo"), 2)
    live_process = "livehost:42:fedcba9876543210"
    live_member = f"{live_process}/00000000-0000-4000-8000-000000000002"
    redis_client.hset(keys.INFLIGHT_JOBS, mapping={dead_member: dead.raw, live_member: live.raw})
    redis_client.zadd(keys.INFLIGHT_INDEX, {dead_member: stale_ms, live_member: stale_ms})
    redis_client.sadd(keys.GEM_PROCESSES, live_process)
    redis_client.set(keys.gem_process_max_connections(live_process), 8, ex=60)
    async with running_worker(redis_url):
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
        await eventually(lambda: redis_client.hlen(keys.INFLIGHT_JOBS) == 1)
    [callback] = callback_jobs(redis_client)
    assert callback.args[1] == "response"
    assert callback.args[0]["request_id"] == "00000000-0000-4000-8000-000000000001"
    assert callback.args[0]["callback_args"] == {"n": 1}
    # The request of a process that is still alive is left alone, however old its score.
    assert redis_client.hgetall(keys.INFLIGHT_JOBS) == {live_member.encode(): live.raw.encode()}
    assert redis_client.zscore(keys.INFLIGHT_INDEX, live_member) == stale_ms
    assert redis_client.llen(keys.queue(QUEUE)) == 0
    assert redis_client.zcard(keys.RETRY) == 0


async def test_a_lone_surrogate_in_callback_args_goes_to_dead_instead_of_stranding_the_request(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    """Issue 13: building the callback job raised, and so did filing the original job, so
    the task stayed in the in-flight keys of a live worker (its own sweep never takes it)."""
    url = http_server.url("/echo")
    hostile = request_job(
        url, callback_args={"a": "X"}, jid="e" * 24, request_id="r-13"
    ).raw.replace('"a":"X"', '"a":"\\ud800"')
    good = numbered_job(url, 1)
    async with running_worker(redis_url):
        redis_client.lpush(keys.queue(QUEUE), hostile, good.raw)
        await eventually(lambda: redis_client.llen(keys.queue(CALLBACKS)) == 1)
        await eventually(lambda: redis_client.zcard(keys.DEAD) == 1)
        await eventually(lambda: redis_client.hlen(keys.INFLIGHT_JOBS) == 0)
    [entry] = redis_client.zrange(keys.DEAD, 0, -1)
    assert entry.startswith(hostile.encode()[:-1])  # the original bytes, error fields spliced
    dead = json.loads(entry)
    assert dead["error_class"] == "JSON::GeneratorError"
    assert dead["error_message"]
    assert redis_client.zcard(keys.INFLIGHT_INDEX) == 0


def test_settings_from_a_config_take_its_in_flight_intervals() -> None:
    config = Config(heartbeat_interval=5, orphan_threshold=50)
    routing = CallbackRouting(is_python_callback=lambda name: name == "Py")
    settings = RequestWorkerSettings.from_config(
        config, PayloadSettings(), routing, config.http_settings()
    )
    assert (settings.heartbeat_interval, settings.orphan_threshold) == (5.0, 50.0)
    assert settings.http == config.http_settings()
    assert settings.routing.queue_for("Py") == "patient_http_callbacks"
    assert settings.routing.queue_for("Ruby") == "default"
