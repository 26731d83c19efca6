import json
import random

import pytest
import redis

from patient_sidekiq import keys
from patient_sidekiq.redis_io.lua import LuaScript
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.fetch import ReliableFetch
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.retry import RetryPolicy
from patient_sidekiq.sidekiq.scheduled import Poller
from patient_sidekiq.sidekiq.unit_of_work import QueueOrder

pytestmark = pytest.mark.integration

NOW = 1795615729.25
IDENTITY = "pybox:1:aaaaaaaaaaaa"
DUE = (
    '{"retry":true,"queue":"patient_http","args":[1],"class":"X",'
    '"jid":"0123456789abcdef01234567","created_at":1795615000.5,"enqueued_at":1795615001.5,'
    '"zzz":[]}'
)


def make_poller(bridge: RedisBridge, identity: str = IDENTITY, **kwargs: object) -> Poller:
    client = SidekiqClient(bridge, clock=lambda: NOW)
    return Poller(
        bridge,
        client,
        identity=identity,
        policy=RetryPolicy(clock=lambda: NOW),
        clock=lambda: NOW,
        rng=random.Random(1),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_due_jobs_move_verbatim_with_a_fresh_enqueued_at(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    later = DUE.replace("0123456789abcdef01234567", "ffffffffffffffffffffffff")
    redis_client.zadd("retry", {DUE: NOW - 1})
    redis_client.zadd("schedule", {DUE.replace('"X"', '"Y"'): NOW, later: NOW + 60})
    assert await make_poller(bridge).enqueue_due() == 2
    queued = [Job.parse(raw) for raw in redis_client.lrange("queue:patient_http", 0, -1)]
    assert [job.class_name for job in queued] == ["Y", "X"]  # retry first, then schedule; LPUSH
    moved = queued[1]
    assert moved.raw == DUE.replace('"enqueued_at":1795615001.5', '"enqueued_at":1795615729.25')
    assert redis_client.zrange("schedule", 0, -1) == [later.encode()]
    assert redis_client.smembers("queues") == {b"patient_http"}
    assert redis_client.llen(keys.inprogress(IDENTITY, "patient_http")) == 0


async def test_members_that_are_not_jobs_are_buried(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    redis_client.zadd("schedule", {"not json": NOW - 5, '{"queue":"q","args":"x"}': NOW - 4})
    assert await make_poller(bridge).enqueue_due() == 0
    # Each with a Ruby error and its original text (poison.py: wrapped, or error fields set).
    dead = {
        entry.get("patient_sidekiq_raw") or entry["args"]: entry["error_class"]
        for entry in map(json.loads, redis_client.zrange("dead", 0, -1))
    }
    assert dead == {"not json": "JSON::ParserError", "x": "NameError"}
    assert redis_client.zcard("schedule") == 0
    assert redis_client.llen(keys.inprogress(IDENTITY, "q")) == 0


async def test_a_crash_between_pop_and_push_loses_nothing(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    redis_client.zadd("retry", {DUE: NOW - 1})
    # The dead process ran only the atomic pop, then died (it has no heartbeat hash).
    dead = "deadbox:2:bbbbbbbbbbbb"
    reply = await LuaScript("scheduled_pop.lua", "patient_sidekiq.sidekiq").run(
        bridge, ["retry", keys.INPROGRESS_REGISTRY], [str(NOW), dead, keys.inprogress(dead, "")]
    )
    assert reply == [DUE.encode(), b"patient_http"]
    assert redis_client.zcard("retry") == 0
    survivor = ReliableFetch(
        bridge, "redis://unused", identity=IDENTITY, queues=QueueOrder([("patient_http", 0)])
    )
    try:
        assert await survivor.recover() == 1
    finally:
        await survivor.close()
    assert redis_client.lrange("queue:patient_http", 0, -1) == [DUE.encode()]


async def test_interval_scales_with_the_number_of_processes(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    poller = make_poller(bridge)
    assert 2.5 <= await poller.random_interval() <= 7.5
    redis_client.sadd("processes", *[f"p{i}" for i in range(3)])
    assert 7.5 <= await poller.random_interval() <= 22.5
    redis_client.sadd("processes", *[f"p{i}" for i in range(12)])
    intervals = [await poller.random_interval() for _ in range(50)]
    assert all(0 <= value < 120 for value in intervals)
    assert min(intervals) < 30  # spread over [0, 2x), not [x/2, 3x/2)
    fixed = make_poller(bridge, poll_interval_average=1.0)
    assert 0.5 <= await fixed.random_interval() <= 1.5


def test_score_is_rubys_float_text() -> None:
    assert rubyjson.ruby_float_repr(NOW) == "1795615729.25"


@pytest.mark.parametrize(
    "extra",
    [
        '"x":1e400',  # infinity: cannot be written back with a fresh enqueued_at
        '"x":"\\ud800"',  # a lone surrogate escape
        '"x":"\udcff"',  # the byte 0xff (not UTF-8), as the pop decodes it
        '"x":' + "[" * 1000 + "]" * 1000,  # deeper than Ruby's JSON max_nesting
    ],
)
async def test_a_due_job_that_cannot_be_re_pushed_goes_to_dead_and_the_poll_goes_on(
    bridge: RedisBridge, redis_client: redis.Redis, extra: str
) -> None:
    hostile = DUE.replace('"zzz":[]', extra).encode("utf-8", "surrogateescape")
    redis_client.zadd("retry", {hostile: NOW - 2, DUE: NOW - 1})
    assert await make_poller(bridge).enqueue_due() == 1  # used to raise, every poll
    assert redis_client.llen("queue:patient_http") == 1
    assert redis_client.zcard("retry") == 0
    [entry] = redis_client.zrange("dead", 0, -1)
    data = json.loads(entry.decode("utf-8", "surrogateescape"))
    # Parked even where Redis cjson (the pop script) cannot read them, then filed by Python.
    assert data["error_class"] in ("JSON::GeneratorError", "JSON::NestingError")
    assert data["error_message"]
    assert redis_client.llen(keys.inprogress(IDENTITY, "patient_http")) == 0
