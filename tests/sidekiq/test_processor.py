import json
from collections.abc import AsyncIterator

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.fetch import ReliableFetch
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.processor import Dispatcher, Processor, Work
from patient_sidekiq.sidekiq.retry import RetryPolicy
from patient_sidekiq.sidekiq.unit_of_work import QueueOrder

pytestmark = pytest.mark.integration

IDENTITY = "pybox:1:cccccccccccc"
NOW = 1795615729.5


@pytest.fixture
async def parts(redis_url: str) -> AsyncIterator[tuple[RedisBridge, ReliableFetch]]:
    async with RedisBridge(redis_url) as bridge:
        fetch = ReliableFetch(bridge, redis_url, identity=IDENTITY, queues=QueueOrder([("q", 0)]))
        try:
            yield bridge, fetch
        finally:
            await fetch.close()


def job_text(class_name: str, jid: str = "a" * 24) -> str:
    return Job.new(class_name, [1], queue="q", jid=jid).raw


def drained(processor: Processor, redis_client: redis.Redis) -> bool:
    """Whether every job pushed to ``q`` has ended.

    A popped job sits in the in-progress list until it is acknowledged, so "queue empty and
    nothing busy" alone is also true while a pop's reply is on its way (a slow machine ended
    tests before their job started). Read in the order a job moves: queue, in-progress list,
    then the processor.
    """
    return not (
        redis_client.llen("queue:q")
        or redis_client.llen(keys.inprogress(IDENTITY, "q"))
        or processor.busy
    )


async def run_until_drained(processor: Processor, redis_client: redis.Redis) -> None:
    async with trio.open_nursery() as jobs:
        jobs.start_soon(processor.fetch_loop, jobs)
        with trio.fail_after(10):
            while not drained(processor, redis_client):
                await trio.sleep(0.01)
        jobs.cancel_scope.cancel()


async def test_every_unit_ends_exactly_one_way(
    parts: tuple[RedisBridge, ReliableFetch], redis_client: redis.Redis
) -> None:
    bridge, fetch = parts
    performed: list[Job] = []
    counts: list[tuple[int, int]] = []

    async def ok(job: Job, work: Work) -> None:
        performed.append(job)

    async def boom(job: Job, work: Work) -> None:
        raise ValueError("boom")

    dispatcher = Dispatcher({"Ok": ok, "Boom": boom})
    processor = Processor(
        bridge,
        fetch,
        dispatcher,
        concurrency=4,
        policy=RetryPolicy(clock=lambda: NOW),
        on_done=lambda p, f: counts.append((p, f)),
    )
    redis_client.lpush(
        "queue:q",
        job_text("Ok", "1" * 24),
        job_text("Boom", "2" * 24),
        job_text("Missing::Worker", "3" * 24),
        "{not json",
    )
    await run_until_drained(processor, redis_client)
    assert [job.jid for job in performed] == ["1" * 24]
    retries = {Job.parse(raw).jid: Job.parse(raw) for raw in redis_client.zrange("retry", 0, -1)}
    assert retries["2" * 24]["error_class"] == "ValueError"
    assert retries["2" * 24]["error_message"] == "boom"
    missing = retries["3" * 24]
    assert missing["error_class"] == "NameError"
    assert "Missing::Worker" in missing["error_message"]
    assert "queue q" in missing["error_message"]
    # Text that is not JSON is wrapped (poison.py): a Ruby error and the original text.
    [dead] = [json.loads(raw) for raw in redis_client.zrange("dead", 0, -1)]
    assert dead["error_class"] == "JSON::ParserError"
    assert dead["patient_sidekiq_raw"] == "{not json"
    assert redis_client.llen(keys.inprogress(IDENTITY, "q")) == 0
    assert sorted(counts) == [(1, 0), (1, 1), (1, 1)]


async def test_concurrency_is_never_exceeded(
    parts: tuple[RedisBridge, ReliableFetch], redis_client: redis.Redis
) -> None:
    bridge, fetch = parts
    release = trio.Event()
    active = 0
    peak = 0

    async def slow(job: Job, work: Work) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1

    processor = Processor(
        bridge, fetch, Dispatcher({"Slow": slow}), concurrency=3, policy=RetryPolicy()
    )
    redis_client.lpush("queue:q", *[job_text("Slow", f"{i:024x}") for i in range(10)])
    async with trio.open_nursery() as jobs:
        jobs.start_soon(processor.fetch_loop, jobs)
        with trio.fail_after(10):
            while processor.busy < 3:
                await trio.sleep(0.01)
        assert redis_client.llen("queue:q") == 7
        assert len(processor.work_entries()) == 3
        release.set()
        with trio.fail_after(10):
            while not drained(processor, redis_client):
                await trio.sleep(0.01)
        jobs.cancel_scope.cancel()
    assert peak == 3


async def test_on_exhausted_runs_when_retries_run_out_as_sidekiq_calls_retries_exhausted(
    parts: tuple[RedisBridge, ReliableFetch], redis_client: redis.Redis
) -> None:
    bridge, fetch = parts
    calls: list[tuple[str | None, str, str]] = []

    async def boom(job: Job, work: Work) -> None:
        raise ValueError(f"boom {job.jid}")

    async def exhausted(job: Job, error: BaseException) -> None:
        calls.append((job.jid, str(job["error_class"]), str(error)))
        if job.jid == "5" * 24:
            raise RuntimeError("a broken exhausted callback is only logged")

    dispatcher = Dispatcher()
    dispatcher.register("Boom", boom, on_exhausted=exhausted)
    dispatcher.register("Plain", boom)  # no callback: dies without one
    processor = Processor(
        bridge, fetch, dispatcher, concurrency=4, policy=RetryPolicy(clock=lambda: NOW)
    )

    def text(class_name: str, jid: str, **fields: object) -> str:
        return Job.new(class_name, [1], queue="q", jid=jid).with_fields(**fields).raw

    redis_client.lpush(
        "queue:q",
        text("Boom", "1" * 24, retry=0),  # dies at once
        text("Boom", "2" * 24, retry=3, retry_count=2, failed_at=NOW - 60),  # last retry: dies
        text("Boom", "3" * 24, retry=0, dead=False),  # exhausted, discarded: still called
        text("Boom", "4" * 24, retry=False),  # never retried: Sidekiq does not call it
        text("Boom", "6" * 24, retry=3, retry_count=1, failed_at=NOW - 60),  # retried later
        text("Boom", "5" * 24, retry=0),
        text("Plain", "7" * 24, retry=0),
    )
    await run_until_drained(processor, redis_client)
    assert sorted(calls) == [
        ("1" * 24, "ValueError", f"boom {'1' * 24}"),
        ("2" * 24, "ValueError", f"boom {'2' * 24}"),
        ("3" * 24, "ValueError", f"boom {'3' * 24}"),
        ("5" * 24, "ValueError", f"boom {'5' * 24}"),
    ]
    dead = sorted(Job.parse(raw).jid or "" for raw in redis_client.zrange("dead", 0, -1))
    assert dead == ["1" * 24, "2" * 24, "5" * 24, "7" * 24]
    assert [Job.parse(raw).jid for raw in redis_client.zrange("retry", 0, -1)] == ["6" * 24]
    assert redis_client.llen(keys.inprogress(IDENTITY, "q")) == 0


async def test_registering_again_without_on_exhausted_removes_it() -> None:
    async def handler(job: Job, work: Work) -> None:
        pass

    async def exhausted(job: Job, error: BaseException) -> None:
        pass

    dispatcher = Dispatcher()
    dispatcher.register("A", handler, on_exhausted=exhausted)
    assert dispatcher.exhausted_callback("A") is exhausted
    dispatcher.register("A", handler)
    assert dispatcher.exhausted_callback("A") is None
    assert dispatcher.exhausted_callback("B") is None


# --- issue 13: hostile job text never ends the worker; it is filed with a Ruby error ---

HOSTILE_JID = "0123456789abcdef01234567"


def hostile(extra: str, class_name: str = "Nope::Job", args: str = "[]") -> bytes:
    return (
        f'{{"class":"{class_name}","args":{args},"jid":"{HOSTILE_JID}","retry":true,'
        f'"queue":"q",{extra}}}'
    ).encode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("raw", "error_class", "kept"),
    [
        # 1e400 parses to infinity, which no JSON writer accepts: spliced, bytes kept.
        (hostile('"x":1e400'), "NameError", True),
        # A lone surrogate escape, and a byte that is not UTF-8 (kept by surrogateescape).
        (hostile('"x":"\\ud800"'), "NameError", True),
        (
            hostile('"x":"\xff"'.encode("latin-1").decode("utf-8", "surrogateescape")),
            "NameError",
            True,
        ),
        # Deeper than Ruby's JSON max_nesting: wrapped, the text kept in a field.
        (hostile('"x":' + "[" * 1000 + "]" * 1000), "JSON::NestingError", False),
        # A handler that fails on the content (it re-encodes the args).
        (hostile('"x":1', "Encodes", '["\\ud800"]'), "JSON::GeneratorError", True),
        (b'{"args":[],"queue":"q"}', "NameError", False),
        (b'{"class":"Ok","args":{},"queue":"q"}', "ArgumentError", False),
        (b"[1,2]", "TypeError", False),
    ],
)
async def test_hostile_job_text_goes_to_dead_with_a_ruby_error(
    parts: tuple[RedisBridge, ReliableFetch],
    redis_client: redis.Redis,
    raw: bytes,
    error_class: str,
    kept: bool,
) -> None:
    bridge, fetch = parts

    async def ok(job: Job, work: Work) -> None:
        pass

    async def encodes(job: Job, work: Work) -> None:
        rubyjson.dumps(job.args)

    dispatcher = Dispatcher({"Ok": ok, "Encodes": encodes})
    processor = Processor(
        bridge, fetch, dispatcher, concurrency=2, policy=RetryPolicy(clock=lambda: NOW)
    )
    redis_client.lpush("queue:q", raw, job_text("Ok"))
    await run_until_drained(processor, redis_client)  # used to raise out of the processor
    assert redis_client.llen(keys.inprogress(IDENTITY, "q")) == 0
    [entry] = redis_client.zrange("dead", 0, -1)
    assert redis_client.zcard("retry") == 0
    if kept:
        # The original bytes, then the spliced error fields.
        assert entry.startswith(raw[:-1])
    data = json.loads(entry.decode("utf-8", "surrogateescape"))
    assert data["error_class"] == error_class
    assert data["error_message"]
    if not kept:
        assert data.get("patient_sidekiq_raw", raw.decode()) == raw.decode()


async def test_on_exhausted_runs_for_a_job_sent_to_dead_by_the_poison_rule(
    parts: tuple[RedisBridge, ReliableFetch], redis_client: redis.Redis
) -> None:
    """A job whose filing cannot be written still died: Sidekiq's retries_exhausted runs
    (e.g. the callback worker's hooks and the cleanup of a stored payload)."""
    bridge, fetch = parts
    calls: list[str | None] = []

    async def boom(job: Job, work: Work) -> None:
        raise ValueError("boom")

    async def exhausted(job: Job, error: BaseException) -> None:
        calls.append(job.jid)

    dispatcher = Dispatcher()
    dispatcher.register("Boom", boom, on_exhausted=exhausted)
    processor = Processor(
        bridge, fetch, dispatcher, concurrency=2, policy=RetryPolicy(clock=lambda: NOW)
    )
    redis_client.lpush(
        "queue:q",
        hostile('"x":1e400', "Boom"),
        hostile('"x":1e400', "Boom").replace(b'"retry":true', b'"retry":false'),
    )
    await run_until_drained(processor, redis_client)
    assert calls == [HOSTILE_JID]  # once, and not for retry: false (Sidekiq never calls it)
    assert redis_client.zcard("dead") == 1  # retry: false is discarded, as in Sidekiq
