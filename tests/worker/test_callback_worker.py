"""The callback worker end to end: a real launcher and real Redis run CallbackWorker jobs."""

from __future__ import annotations

import base64
import json
import logging
import threading
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import ConfigurationError, JobArgumentError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.registry.hooks import Hooks
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher
from patient_sidekiq.wire.encryption import MessageEncryptor
from patient_sidekiq.wire.failures import (
    ClientError,
    HttpError,
    RecursiveRedirectError,
    RedirectError,
    RequestError,
    ServerError,
    TooManyRedirectsError,
)
from patient_sidekiq.wire.jobs import CALLBACK_WORKER
from patient_sidekiq.wire.packing import PayloadSettings, pack
from patient_sidekiq.wire.payload_store import RedisPayloadStore
from patient_sidekiq.wire.response import Response
from patient_sidekiq.worker.callback_worker import (
    CallbackCall,
    CallbackWorker,
    CallbackWorkerSettings,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

CALLBACKS = "patient_http_callbacks"
RUBY = "default"
NAME = "Billing::FetchInvoiceCallback"
ENCRYPTOR = MessageEncryptor("oracle-secret-key")
URL = "https://api.example.com/v1/items"

Seen = list[tuple[str, Any, int]]
Failure = RequestError | HttpError | RedirectError


def recording(seen: Seen, *, fail: Exception | None = None, asynchronous: bool = False) -> type:
    """A callback class appending ``(method, value, thread id)`` to ``seen``."""
    if asynchronous:

        class AsyncRecording:
            async def on_complete(self, response: Response) -> None:
                seen.append(("on_complete", response, threading.get_ident()))
                if fail is not None:
                    raise fail

            async def on_error(self, error: Exception) -> None:
                seen.append(("on_error", error, threading.get_ident()))
                if fail is not None:
                    raise fail

        return AsyncRecording

    class Recording:
        def on_complete(self, response: Response) -> None:
            seen.append(("on_complete", response, threading.get_ident()))
            if fail is not None:
                raise fail

        def on_error(self, error: Exception) -> None:
            seen.append(("on_error", error, threading.get_ident()))
            if fail is not None:
                raise fail

    return Recording


def registry_with(cls: type, name: str | None = NAME) -> CallbackRegistry:
    registry = CallbackRegistry()
    registry.register(cls, name)
    return registry


def response(status: int = 200, **kwargs: Any) -> Response:
    defaults: dict[str, Any] = {
        "headers": {"Content-Type": "application/json", "X-Thing": "1"},
        "body": b'{"a":[1,2]}',
        "duration": 0.25,
        "request_id": "00000000-0000-4000-8000-000000000001",
        "url": URL,
        "http_method": "get",
        "callback_args": {"k": "v"},
    }
    defaults.update(kwargs)
    return Response.build(status=status, clock=lambda: 0.0, **defaults)


def callback_job(
    data: Any, kind: str = "response", name: str = NAME, *, jid: str = "c" * 24, **extra: Any
) -> Job:
    """A CallbackWorker job shaped as the gem pushes it (golden ``jobs``)."""
    fields: dict[str, Any] = {"retry": True, "created_at": 1795615729.926124}
    fields.update(extra)
    retry = fields.pop("retry")
    return Job.new(
        CALLBACK_WORKER, [data, kind, name], queue=CALLBACKS, retry=retry, jid=jid, **fields
    )


def zset_jobs(client: redis.Redis, key: str) -> list[Job]:
    return [Job.parse(raw) for raw in cast(list[bytes], client.zrange(key, 0, -1))]


@asynccontextmanager
async def running_callbacks(
    redis_url: str,
    registry: CallbackRegistry,
    *,
    hooks: Hooks | None = None,
    payloads: PayloadSettings | None = None,
    polled: Sequence[str] = (CALLBACKS,),
    ruby_queue: str = RUBY,
    concurrency: int = 10,
    shutdown_timeout: float = 5.0,
    elsewhere: Sequence[str] = (),
    backtrace: bool | int = True,
) -> AsyncIterator[Launcher]:
    """A launcher polling ``polled`` whose dispatcher runs CallbackWorker jobs with a worker."""
    async with RedisBridge(redis_url) as bridge:
        settings = CallbackWorkerSettings(
            payloads or PayloadSettings(),
            hooks or Hooks(),
            registry,
            ruby_callback_queue=ruby_queue,
            concurrency=concurrency,
            registered_elsewhere=lambda name: name in elsewhere,
            backtrace=backtrace,
        )
        worker = CallbackWorker(settings, bridge)
        dispatcher = Dispatcher()
        worker.register(dispatcher, polled)
        launcher = Launcher(
            WorkerSettings(
                redis_url=redis_url,
                queues=[(queue, 0) for queue in polled],
                concurrency=concurrency,
                shutdown_timeout=shutdown_timeout,
                handle_os_signals=False,
            ),
            dispatcher,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(launcher.run)
            try:
                yield launcher
            finally:
                launcher.stop()


@asynccontextmanager
async def redis_store(redis_url: str, **kwargs: Any) -> AsyncIterator[PayloadSettings]:
    """Payload settings whose default store is a RedisPayloadStore named ``redis``."""
    async with RedisBridge(redis_url) as bridge:
        yield PayloadSettings(
            stores={"redis": RedisPayloadStore(bridge)}, default_store="redis", **kwargs
        )


def idle(client: redis.Redis, launcher: Launcher, queue: str = CALLBACKS) -> bool:
    """No job of ``queue`` waiting or in progress in this launcher."""
    return not client.llen(keys.queue(queue)) and not client.llen(
        keys.inprogress(launcher.identity, queue)
    )


async def run_one(
    redis_url: str,
    redis_client: redis.Redis,
    registry: CallbackRegistry,
    raw: str,
    **options: Any,
) -> None:
    """Push one job's text onto the Python callback queue and wait until it has ended."""
    async with running_callbacks(redis_url, registry, **options) as launcher:
        redis_client.lpush(keys.queue(CALLBACKS), raw)
        await eventually(lambda: idle(redis_client, launcher))


# --- results reach the callback ---


@pytest.mark.parametrize("status", [200, 404, 503])
async def test_response_reaches_on_complete(
    redis_url: str, redis_client: redis.Redis, status: int
) -> None:
    seen: Seen = []
    job = callback_job(response(status).to_wire())
    await run_one(redis_url, redis_client, registry_with(recording(seen)), job.raw)
    [(method, got, _)] = seen
    assert method == "on_complete"
    assert isinstance(got, Response)
    assert got.status == status
    assert got.headers["x-thing"] == "1"
    assert got.headers["content-type"] == "application/json"
    assert got.body == '{"a":[1,2]}'
    assert got.json() == {"a": [1, 2]}
    assert got.success is (status == 200)
    assert got.client_error is (status == 404)
    assert got.server_error is (status == 503)
    assert got.callback_args["k"] == "v"
    assert got.url == URL
    assert redis_client.zcard(keys.RETRY) == 0
    assert redis_client.zcard(keys.DEAD) == 0


def _failures() -> list[Failure]:
    redirects = [f"{URL}/{n}" for n in range(1, 4)]
    common: dict[str, Any] = {
        "http_method": "get",
        "duration": 0.5,
        "request_id": "r-1",
        "callback_args": {"k": "v"},
    }
    return [
        RequestError(
            class_name="Errno::ECONNREFUSED",
            message="Connection refused - connect(2) for 127.0.0.1:1",
            backtrace=["a.rb:1:in `x'"],
            error_type="connection",
            url=URL,
            **common,
        ),
        HttpError.for_response(
            response(404, body=b"missing", headers={"content-type": "text/plain"})
        ),
        HttpError.for_response(response(503, body=b"nope", headers={"content-type": "text/plain"})),
        TooManyRedirectsError(url=f"{URL}/4", redirects=redirects, **common),
        RecursiveRedirectError(url=f"{URL}/1", redirects=redirects, **common),
    ]


@pytest.mark.parametrize("failure", _failures(), ids=lambda failure: type(failure).__name__)
async def test_error_reaches_on_error(
    redis_url: str, redis_client: redis.Redis, failure: Failure
) -> None:
    seen: Seen = []
    job = callback_job(failure.to_wire(), "error")
    await run_one(redis_url, redis_client, registry_with(recording(seen)), job.raw)
    [(method, got, _)] = seen
    assert method == "on_error"
    assert type(got) is type(failure)
    assert got.error_type == failure.error_type
    assert got.message == failure.message
    assert got.callback_args["k"] == "v"
    assert got.to_wire() == failure.to_wire()
    if isinstance(failure, HttpError):
        assert isinstance(got, HttpError)
        assert got.response.status == failure.status
        assert got.response.body == failure.response.body
        assert isinstance(got, ClientError if failure.status == 404 else ServerError)
    if isinstance(failure, RedirectError):
        assert isinstance(got, RedirectError)
        assert got.redirects == failure.redirects
    assert redis_client.zcard(keys.RETRY) == 0


async def test_the_gems_golden_callback_jobs(
    redis_url: str, redis_client: redis.Redis, golden: dict[str, Any]
) -> None:
    seen: Seen = []
    registry = registry_with(recording(seen), "OracleCallback")
    names = [
        "CallbackWorker_response",
        "CallbackWorker_request_error",
        "CallbackWorker_http_error",
        "CallbackWorker_too_many_redirects",
    ]
    async with running_callbacks(redis_url, registry) as launcher:
        for name in names:  # one at a time, so `seen` follows the order of `names`
            redis_client.lpush(keys.queue(CALLBACKS), rubyjson.dumps(golden["jobs"][name]))
            await eventually(lambda: idle(redis_client, launcher))
    assert [method for method, _, _ in seen] == ["on_complete", "on_error", "on_error", "on_error"]
    ok, refused, unavailable, redirected = (value for _, value, _ in seen)
    assert isinstance(ok, Response)
    assert (ok.status, ok.json(), ok.callback_args["user_id"]) == (200, {"a": 1}, 42)
    assert ok.duration == 0.25
    assert isinstance(refused, RequestError)
    assert refused.class_name == "Errno::ECONNREFUSED"
    assert refused.error_type == "connection"
    assert refused.message == "Connection refused - connect(2) for 127.0.0.1:1"
    assert refused.callback_args["k"] == "v"
    assert isinstance(unavailable, ServerError)
    assert unavailable.status == 503
    assert unavailable.response.body == "nope"
    assert unavailable.message == f"HTTP 503 response from GET {URL}"
    assert unavailable.callback_args["user_id"] == 42
    assert isinstance(redirected, TooManyRedirectsError)
    assert len(redirected.redirects) == 5
    assert redirected.message == f"Too many redirects (5) while requesting GET {URL}/1"
    assert redis_client.zcard(keys.RETRY) == 0


@pytest.mark.parametrize(
    "name", ["CallbackWorker_external_not_encrypted", "CallbackWorker_encrypted_external"]
)
async def test_the_gems_golden_stored_callback_jobs(
    redis_url: str, redis_client: redis.Redis, golden: dict[str, Any], name: str
) -> None:
    vector = golden["jobs"][name]
    stored_key = vector["payload_store_redis_key"]
    redis_client.set(stored_key, vector["stored_value"])
    stored = json.loads(vector["stored_value"])
    expected = (
        json.loads(ENCRYPTOR.decrypt_text(stored).text) if "__encrypted__" in stored else stored
    )
    seen: Seen = []
    async with redis_store(redis_url, encryptor=ENCRYPTOR) as payloads:
        await run_one(
            redis_url,
            redis_client,
            registry_with(recording(seen), "OracleCallback"),
            rubyjson.dumps(vector["job"]),
            payloads=payloads,
        )
    [(_, got, _)] = seen
    assert got.to_wire() == Response.from_wire(expected).to_wire()
    assert got.callback_args["user_id"] == 42
    assert not redis_client.exists(stored_key)


async def test_encrypted_payload(redis_url: str, redis_client: redis.Redis) -> None:
    seen: Seen = []
    job = callback_job(ENCRYPTOR.encrypt(response().to_wire()))
    await run_one(
        redis_url,
        redis_client,
        registry_with(recording(seen)),
        job.raw,
        payloads=PayloadSettings(encryptor=ENCRYPTOR),
    )
    [(_, got, _)] = seen
    assert got.json() == {"a": [1, 2]}


async def test_stored_payload_is_deleted_after_the_callback_succeeded(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seen: Seen = []
    async with redis_store(redis_url, encryptor=ENCRYPTOR, store_threshold=0) as payloads:
        reference = await pack(response().to_wire(), payloads)
        stored_key = keys.payload_key(reference["$ref"]["key"])
        assert redis_client.exists(stored_key)
        job = callback_job(reference)
        await run_one(
            redis_url, redis_client, registry_with(recording(seen)), job.raw, payloads=payloads
        )
    [(_, got, _)] = seen
    assert got.json() == {"a": [1, 2]}
    assert not redis_client.exists(stored_key)


async def test_stored_payload_is_kept_when_the_callback_failed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seen: Seen = []
    async with redis_store(redis_url, store_threshold=0) as payloads:
        reference = await pack(response().to_wire(), payloads)
        stored_key = keys.payload_key(reference["$ref"]["key"])
        job = callback_job(reference)
        registry = registry_with(recording(seen, fail=RuntimeError("callback broke")))
        await run_one(redis_url, redis_client, registry, job.raw, payloads=payloads)
    assert len(seen) == 1
    assert redis_client.exists(stored_key)  # the retry needs it
    [retried] = zset_jobs(redis_client, keys.RETRY)
    assert retried.args == job.args
    assert retried["error_class"] == "RuntimeError"


# --- hooks ---


async def test_hooks_run_in_order_before_the_callback(
    redis_url: str, redis_client: redis.Redis
) -> None:
    order: list[str] = []
    hooks = Hooks()

    def where() -> str:
        # Sync hooks run in the callback threads; async ones on the (main-thread) loop.
        return "loop" if threading.current_thread() is threading.main_thread() else "thread"

    @hooks.after_completion
    def first(response: Response) -> None:
        order.append(f"completion-1 {response.status} {where()}")

    @hooks.after_completion
    async def second(response: Response) -> None:
        order.append(f"completion-2 {where()}")

    @hooks.after_error
    def on_error_hook(error: Exception) -> None:
        order.append(f"error {type(error).__name__} {where()}")

    class Ordered:
        def on_complete(self, response: Response) -> None:
            order.append("on_complete")

        def on_error(self, error: Exception) -> None:
            order.append("on_error")

    registry = registry_with(Ordered)
    async with running_callbacks(redis_url, registry, hooks=hooks) as launcher:
        redis_client.lpush(keys.queue(CALLBACKS), callback_job(response().to_wire()).raw)
        await eventually(lambda: idle(redis_client, launcher))
        error = _failures()[0]
        job = callback_job(error.to_wire(), "error", jid="d" * 24)
        redis_client.lpush(keys.queue(CALLBACKS), job.raw)
        await eventually(lambda: idle(redis_client, launcher))
    assert order == [
        "completion-1 200 thread",
        "completion-2 loop",
        "on_complete",
        "error RequestError thread",
        "on_error",
    ]


async def test_a_hook_that_raises_fails_the_job_before_the_callback(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seen: Seen = []
    hooks = Hooks()

    @hooks.after_completion
    def broken(response: Response) -> None:
        raise ValueError("hook broke")

    job = callback_job(response().to_wire())
    await run_one(redis_url, redis_client, registry_with(recording(seen)), job.raw, hooks=hooks)
    assert seen == []
    [retried] = zset_jobs(redis_client, keys.RETRY)
    assert (retried["error_class"], retried["error_message"]) == ("ValueError", "hook broke")


# --- failures are filed like Ruby's ---


class InvoiceMissingError(Exception):
    pass


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_raising_callback_goes_to_retry(
    redis_url: str, redis_client: redis.Redis, asynchronous: bool
) -> None:
    seen: Seen = []
    registry = registry_with(
        recording(seen, fail=InvoiceMissingError("invoice 7 is gone"), asynchronous=asynchronous)
    )
    job = callback_job(response().to_wire())
    await run_one(redis_url, redis_client, registry, job.raw)
    [retried] = zset_jobs(redis_client, keys.RETRY)
    assert retried.jid == job.jid
    assert retried["error_class"] == "tests.worker.test_callback_worker.InvoiceMissingError"
    assert retried["error_message"] == "invoice 7 is gone"
    assert retried["retry_count"] == 0
    assert retried["queue"] == CALLBACKS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([{"status": 200}, "response"], "wrong number of arguments (given 2, expected 3)"),
        ([{"status": 200}, "response", NAME, 1], "wrong number of arguments (given 4, expected 3)"),
        ([{"status": 200}, "bogus", NAME], "Unknown result_type: bogus"),
        (["text", "response", NAME], "result data must be a JSON object, got 'text'"),
        ([{"status": 200}, "response", None], "callback name must be a non-empty string, got None"),
    ],
)
async def test_bad_args_go_to_retry_as_argument_errors(
    redis_url: str, redis_client: redis.Redis, args: list[Any], message: str
) -> None:
    seen: Seen = []
    job = Job.new(CALLBACK_WORKER, args, queue=CALLBACKS)
    await run_one(redis_url, redis_client, registry_with(recording(seen)), job.raw)
    assert seen == []
    [retried] = zset_jobs(redis_client, keys.RETRY)
    assert (retried["error_class"], retried["error_message"]) == ("ArgumentError", message)


def test_callback_call_checks_args_without_redis() -> None:
    call = CallbackCall.from_args([{"status": 200}, "error", "A::B"])
    assert (call.result_type, call.callback_name) == ("error", "A::B")
    with pytest.raises(JobArgumentError, match="Unknown result_type: 3"):
        CallbackCall.from_args([{}, 3, "A"])


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        CallbackWorkerSettings(PayloadSettings(), Hooks(), CallbackRegistry(), concurrency=0)
    with pytest.raises(ConfigurationError, match="queue name"):
        CallbackWorkerSettings(
            PayloadSettings(), Hooks(), CallbackRegistry(), ruby_callback_queue=""
        )


# --- sync and async callbacks ---


async def test_sync_callbacks_run_in_a_thread_async_ones_on_the_loop(
    redis_url: str, redis_client: redis.Redis
) -> None:
    sync_seen: Seen = []
    async_seen: Seen = []
    registry = CallbackRegistry()
    registry.register(recording(sync_seen), "Sync::Callback")
    registry.register(recording(async_seen, asynchronous=True), "Async::Callback")
    async with running_callbacks(redis_url, registry) as launcher:
        redis_client.lpush(
            keys.queue(CALLBACKS),
            callback_job(response().to_wire(), name="Sync::Callback", jid="1" * 24).raw,
            callback_job(response().to_wire(), name="Async::Callback", jid="2" * 24).raw,
        )
        await eventually(lambda: idle(redis_client, launcher))
    loop_thread = threading.get_ident()
    [(_, _, sync_thread)] = sync_seen
    [(_, _, async_thread)] = async_seen
    assert sync_thread != loop_thread
    assert async_thread == loop_thread


async def test_a_blocking_sync_callback_does_not_block_the_loop(
    redis_url: str, redis_client: redis.Redis
) -> None:
    started = threading.Event()
    release = threading.Event()
    finished: list[bool] = []

    class Blocking:
        def on_complete(self, response: Response) -> None:
            started.set()
            finished.append(release.wait(5))

        def on_error(self, error: Exception) -> None:
            raise AssertionError("not called")

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.005)

    async with running_callbacks(redis_url, registry_with(Blocking)) as launcher:
        redis_client.lpush(keys.queue(CALLBACKS), callback_job(response().to_wire()).raw)
        await eventually(started.is_set)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            await eventually(lambda: ticks >= 20)
            nursery.cancel_scope.cancel()
        assert finished == []  # the callback is still blocked while the loop ran
        release.set()
        await eventually(lambda: idle(redis_client, launcher))
    assert finished == [True]


async def test_concurrency_bounds_the_callback_threads(
    redis_url: str, redis_client: redis.Redis
) -> None:
    lock = threading.Lock()
    release = threading.Event()
    running = 0
    peak = 0

    class Counting:
        def on_complete(self, response: Response) -> None:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            release.wait(5)
            with lock:
                running -= 1

        def on_error(self, error: Exception) -> None:
            pass

    registry = registry_with(Counting)
    async with RedisBridge(redis_url) as bridge:
        worker = CallbackWorker(
            CallbackWorkerSettings(PayloadSettings(), Hooks(), registry, concurrency=2), bridge
        )
        dispatcher = Dispatcher()
        worker.register(dispatcher, [CALLBACKS])
        launcher = Launcher(
            WorkerSettings(
                redis_url=redis_url,
                queues=[(CALLBACKS, 0)],
                concurrency=6,  # more job slots than threads
                handle_os_signals=False,
            ),
            dispatcher,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(launcher.run)
            jobs = [callback_job(response().to_wire(), jid=f"{n:024x}").raw for n in range(6)]
            redis_client.lpush(keys.queue(CALLBACKS), *jobs)
            await eventually(lambda: running == 2)
            await trio.sleep(0.1)  # give a third thread the chance to (wrongly) start
            assert peak == 2
            release.set()
            await eventually(lambda: idle(redis_client, launcher))
            launcher.stop()
    assert peak == 2


async def test_hard_shutdown_abandons_a_blocked_sync_callback_and_requeues_its_job(
    redis_url: str, redis_client: redis.Redis
) -> None:
    started = threading.Event()
    release = threading.Event()

    class Stuck:
        def on_complete(self, response: Response) -> None:
            started.set()
            release.wait(10)

        def on_error(self, error: Exception) -> None:
            pass

    job = callback_job(response().to_wire())
    try:
        with trio.fail_after(10):
            async with running_callbacks(
                redis_url, registry_with(Stuck), shutdown_timeout=0.2
            ) as launcher:
                redis_client.lpush(keys.queue(CALLBACKS), job.raw)
                await eventually(started.is_set)
        assert redis_client.lrange(keys.queue(CALLBACKS), 0, -1) == [job.raw.encode()]
        assert not redis_client.llen(keys.inprogress(launcher.identity, CALLBACKS))
    finally:
        release.set()


# --- callbacks that belong to the Ruby app ---


async def test_unregistered_callback_moves_unchanged_to_the_ruby_queue(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Spacing and number spelling no Python serialiser would produce: the move must not
    # re-serialise the job.
    raw = (
        '{"retry": true, "queue": "patient_http_callbacks", "args": [{"status":200,"x":1.0e+16},'
        ' "response", "RubyApp::InvoiceCallback"], "class": "PatientHttp::Sidekiq::CallbackWorker",'
        ' "jid": "eeeeeeeeeeeeeeeeeeeeeeee", "created_at": 1795615729.9261240}'
    )
    seen: Seen = []
    await run_one(redis_url, redis_client, registry_with(recording(seen)), raw)
    assert seen == []
    assert redis_client.lrange(keys.queue(RUBY), 0, -1) == [raw.encode()]
    assert redis_client.sismember(keys.QUEUES, RUBY)
    assert redis_client.zcard(keys.RETRY) == 0


async def test_unregistered_callback_with_bytes_that_are_not_utf8_moves_byte_for_byte(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Issue 13: the move encoded the text strictly and raised; filing it raised again."""
    raw = (
        b'{"retry":true,"queue":"patient_http_callbacks","args":[{"status":200,"x":"\xff"},'
        b'"response","RubyApp::InvoiceCallback"],"class":"PatientHttp::Sidekiq::CallbackWorker",'
        b'"jid":"eeeeeeeeeeeeeeeeeeeeeeee"}'
    )
    await run_one(redis_url, redis_client, registry_with(recording([])), raw)  # type: ignore[arg-type]
    assert redis_client.lrange(keys.queue(RUBY), 0, -1) == [raw]
    assert redis_client.zcard(keys.RETRY) == 0


async def test_unregistered_callback_is_retried_when_the_ruby_queue_is_polled_here(
    redis_url: str, redis_client: redis.Redis
) -> None:
    job = callback_job(response().to_wire(), name="RubyApp::InvoiceCallback")
    async with running_callbacks(
        redis_url, registry_with(recording([])), polled=(CALLBACKS, RUBY)
    ) as launcher:
        redis_client.lpush(keys.queue(CALLBACKS), job.raw)
        await eventually(
            lambda: idle(redis_client, launcher) and idle(redis_client, launcher, RUBY)
        )
        await eventually(lambda: redis_client.zcard(keys.RETRY))
    [retried] = zset_jobs(redis_client, keys.RETRY)
    assert retried["error_class"] == "ArgumentError"
    assert "'RubyApp::InvoiceCallback' is not registered in Python" in retried["error_message"]
    assert "'default' is polled by this worker" in retried["error_message"]
    assert not redis_client.llen(keys.queue(RUBY))


async def test_a_callback_another_worker_registered_is_retried_not_sent_to_ruby(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # This worker lacks the module (a deploy in progress); another live worker has it.
    job = callback_job(response().to_wire(), name="billing.callbacks.Done")
    async with running_callbacks(
        redis_url, registry_with(recording([])), elsewhere=["billing.callbacks.Done"]
    ) as launcher:
        redis_client.lpush(keys.queue(CALLBACKS), job.raw)
        await eventually(lambda: idle(redis_client, launcher) and redis_client.zcard(keys.RETRY))
    [retried] = zset_jobs(redis_client, keys.RETRY)
    assert retried["queue"] == CALLBACKS  # comes back to the Python queue, not Ruby's
    assert "registered by another live worker" in retried["error_message"]
    assert not redis_client.llen(keys.queue(RUBY))


# --- retries exhausted ---


@pytest.mark.parametrize(
    "last_try", [{"retry": True, "retry_count": 24, "failed_at": 1795615000.5}, {"retry": 0}]
)
async def test_retries_exhausted_runs_the_hook_once_and_deletes_the_payload(
    redis_url: str, redis_client: redis.Redis, last_try: dict[str, Any]
) -> None:
    exhausted: list[Exception] = []
    hooks = Hooks()
    hooks.on_retries_exhausted(exhausted.append)
    failure = _failures()[0]
    seen: Seen = []
    async with redis_store(redis_url, encryptor=ENCRYPTOR, store_threshold=0) as payloads:
        reference = await pack(failure.to_wire(), payloads)
        stored_key = keys.payload_key(reference["$ref"]["key"])
        job = callback_job(reference, "error", **last_try)
        registry = registry_with(recording(seen, fail=InvoiceMissingError("still broken")))
        async with running_callbacks(
            redis_url, registry, hooks=hooks, payloads=payloads
        ) as launcher:
            redis_client.lpush(keys.queue(CALLBACKS), job.raw)
            await eventually(lambda: not redis_client.exists(stored_key))
            await eventually(lambda: idle(redis_client, launcher))
    assert len(seen) == 1
    [error] = exhausted
    assert isinstance(error, RequestError)
    assert error.to_wire() == failure.to_wire()
    [dead] = zset_jobs(redis_client, keys.DEAD)
    assert dead.jid == job.jid
    assert dead["error_class"] == "tests.worker.test_callback_worker.InvoiceMissingError"
    assert redis_client.zcard(keys.RETRY) == 0


async def test_a_dead_response_job_deletes_its_payload_without_the_hook(
    redis_url: str, redis_client: redis.Redis
) -> None:
    exhausted: list[Exception] = []
    hooks = Hooks()
    hooks.on_retries_exhausted(exhausted.append)
    async with redis_store(redis_url, store_threshold=0) as payloads:
        reference = await pack(response().to_wire(), payloads)
        stored_key = keys.payload_key(reference["$ref"]["key"])
        job = callback_job(reference, retry=0)
        registry = registry_with(recording([], fail=InvoiceMissingError("broken")))
        async with running_callbacks(
            redis_url, registry, hooks=hooks, payloads=payloads
        ) as launcher:
            redis_client.lpush(keys.queue(CALLBACKS), job.raw)
            await eventually(lambda: not redis_client.exists(stored_key))
            await eventually(lambda: idle(redis_client, launcher))
    assert exhausted == []
    assert redis_client.zcard(keys.DEAD) == 1


async def test_a_job_that_dies_of_bad_args_runs_no_exhausted_hook(
    redis_url: str, redis_client: redis.Redis
) -> None:
    exhausted: list[Exception] = []
    hooks = Hooks()
    hooks.on_retries_exhausted(exhausted.append)
    job = Job.new(CALLBACK_WORKER, [{"status": 200}, "error"], queue=CALLBACKS, retry=0)
    await run_one(redis_url, redis_client, registry_with(recording([])), job.raw, hooks=hooks)
    # The gem would hand the hooks an empty RequestError loaded from {"status": 200}.
    assert exhausted == []
    [dead] = zset_jobs(redis_client, keys.DEAD)
    assert dead["error_class"] == "ArgumentError"


# --- a failing Python callback explains itself: the log, and the entry's error_backtrace ---


def backtrace_of(job: Job) -> list[str]:
    """``error_backtrace`` decoded as Sidekiq's ``uncompress_backtrace`` does."""
    return cast(list[str], json.loads(zlib.decompress(base64.b64decode(job["error_backtrace"]))))


def failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and "failed" in r.getMessage()]


class Exploding:
    def on_complete(self, response: Response) -> None:
        self.look_up_invoice(response)

    def look_up_invoice(self, response: Response) -> None:
        raise InvoiceMissingError(f"no invoice for {response.request_id}")

    def on_error(self, error: Exception) -> None:
        raise AssertionError("not this one")


async def test_a_failing_callback_is_logged_at_error_with_its_traceback_and_backtrace(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job = callback_job(response().to_wire())  # no "backtrace" key: the worker's default
    await run_one(redis_url, redis_client, registry_with(Exploding), job.raw)
    [record] = failure_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None  # what Sentry's logging integration reports
    assert isinstance(record.exc_info[1], InvoiceMissingError)
    assert record.getMessage() == (
        f"{CALLBACK_WORKER} jid={job.jid} callback={NAME} "
        "request_id=00000000-0000-4000-8000-000000000001 method=on_complete failed: "
        "InvoiceMissingError: no invoice for 00000000-0000-4000-8000-000000000001"
    )
    [retried] = zset_jobs(redis_client, keys.RETRY)
    lines = backtrace_of(retried)
    # Innermost first, Ruby's shape: the Web UI shows where it broke at the top.
    raised_at = Exploding.look_up_invoice.__code__.co_firstlineno + 1
    assert lines[0] == f"{__file__}:{raised_at}:in `look_up_invoice'"
    assert lines[1].endswith(":in `on_complete'")
    assert all(":in `" in line and line.endswith("'") for line in lines)
    assert "backtrace" not in retried  # the option is the worker's, not written into the job


@pytest.mark.parametrize(
    ("setting", "job_option", "expected_lines"),
    [
        (True, None, "all"),
        (1, None, 1),
        (False, None, 0),
        (False, True, "all"),  # the job's own option wins, as in Sidekiq
        (True, False, 0),
        (True, 2, 2),
    ],
)
async def test_backtrace_setting_and_the_jobs_own_option(
    redis_url: str,
    redis_client: redis.Redis,
    setting: bool | int,
    job_option: bool | int | None,
    expected_lines: int | str,
) -> None:
    extra = {} if job_option is None else {"backtrace": job_option}
    job = callback_job(response().to_wire(), **extra)
    await run_one(redis_url, redis_client, registry_with(Exploding), job.raw, backtrace=setting)
    [retried] = zset_jobs(redis_client, keys.RETRY)
    if expected_lines == 0:
        assert "error_backtrace" not in retried
        return
    lines = backtrace_of(retried)
    assert lines[0].endswith(":in `look_up_invoice'")
    if expected_lines == "all":
        assert len(lines) > 2  # the worker's own frames below the callback's
    else:
        assert len(lines) == expected_lines


async def test_a_failing_hook_is_named_in_the_log_line(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks()

    @hooks.after_error
    def audit(error: Exception) -> None:
        raise ValueError("audit table is full")

    job = callback_job(_failures()[0].to_wire(), "error")
    await run_one(redis_url, redis_client, registry_with(Exploding), job.raw, hooks=hooks)
    [record] = failure_records(caplog)
    assert record.exc_info is not None
    assert (
        f"callback={NAME} request_id=r-1 hook=after_error:"
        f"{__name__}.test_a_failing_hook_is_named_in_the_log_line.<locals>.audit failed: "
        "ValueError: audit table is full"
    ) in record.getMessage()
    [retried] = zset_jobs(redis_client, keys.RETRY)
    assert backtrace_of(retried)[0].endswith(":in `audit'")


async def test_a_failing_retries_exhausted_hook_is_logged_with_its_traceback(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks()

    @hooks.on_retries_exhausted
    def page_someone(error: Exception) -> None:
        raise ConnectionError("pager unreachable")

    job = callback_job(_failures()[0].to_wire(), "error", retry=0)  # its first failure is its last
    registry = registry_with(recording([], fail=InvoiceMissingError("still broken")))
    await run_one(redis_url, redis_client, registry, job.raw, hooks=hooks)
    [record] = [r for r in caplog.records if "on_retries_exhausted hook" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ConnectionError)
    assert record.getMessage().endswith(
        f"page_someone failed jid={job.jid} callback={NAME} request_id=r-1: "
        "ConnectionError: pager unreachable"
    )
    [dead] = zset_jobs(redis_client, keys.DEAD)
    assert backtrace_of(dead)[0].endswith(":in `on_error'")
