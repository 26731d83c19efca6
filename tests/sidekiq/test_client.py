"""Pushing, scheduling and requeueing against a real Redis."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from patient_sidekiq.errors import InvalidJobError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.job import Job, TimestampDialect

pytestmark = pytest.mark.integration

NOW = 1700000000.0
LATER = 1795615729.9256558


def _clock() -> float:
    return NOW


def _members(client: redis.Redis, key: str) -> list[str]:
    items: list[bytes] = client.lrange(key, 0, -1)  # type: ignore[assignment]
    return [item.decode() for item in items]


def _scored(client: redis.Redis, key: str) -> list[tuple[bytes, float]]:
    pairs: Any = client.zrange(key, 0, -1, withscores=True)
    return [(member, score) for member, score in pairs]


async def test_push_writes_queues_set_and_lpush(redis_url: str, redis_client: redis.Redis) -> None:
    async with RedisBridge(redis_url) as bridge:
        client = SidekiqClient(bridge, clock=_clock)
        first = await client.push(Job.new("A", [1], jid="a" * 24))
        second = await client.push(Job.new("A", [2], jid="b" * 24))
    assert redis_client.smembers("queues") == {b"default"}
    # LPUSH: newest on the left, the oldest (next to pop) at index -1.
    assert _members(redis_client, "queue:default") == [second.raw, first.raw]
    assert first.raw.endswith(
        f'"jid":"{"a" * 24}","created_at":1700000000.0,"enqueued_at":1700000000.0}}'
    )


async def test_push_keeps_created_at_and_overwrites_enqueued_at(
    redis_url: str, redis_client: redis.Redis
) -> None:
    original = Job.parse(
        '{"class":"A","args":[],"queue":"low","created_at":1.5,"enqueued_at":2.5,"x":1}'
    )
    async with RedisBridge(redis_url) as bridge:
        pushed = await SidekiqClient(bridge, clock=lambda: LATER).push(original)
    expected = (
        '{"class":"A","args":[],"queue":"low","created_at":1.5,'
        '"enqueued_at":1795615729.9256558,"x":1}'
    )
    assert pushed.raw == expected
    assert _members(redis_client, "queue:low") == [expected]
    assert redis_client.smembers("queues") == {b"low"}


async def test_push_millis_dialect(redis_url: str, redis_client: redis.Redis) -> None:
    async with RedisBridge(redis_url) as bridge:
        client = SidekiqClient(bridge, dialect=TimestampDialect.MILLIS, clock=lambda: LATER)
        pushed = await client.push(Job.new("A", []))
    (raw,) = _members(redis_client, "queue:default")
    assert raw == pushed.raw
    assert raw.endswith('"created_at":1795615729925,"enqueued_at":1795615729925}')
    assert type(rubyjson.loads(raw)["enqueued_at"]) is int


async def test_push_requires_queue(redis_url: str) -> None:
    async with RedisBridge(redis_url) as bridge:
        with pytest.raises(InvalidJobError):
            await SidekiqClient(bridge).push(Job.parse('{"class":"A","args":[]}'))


async def test_push_real_clock_writes_decimal_point(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async with RedisBridge(redis_url) as bridge:
        await SidekiqClient(bridge).push(Job.new("A", []))
    (raw,) = _members(redis_client, "queue:default")
    assert re.search(r'"enqueued_at":\d+\.\d+(e[+-]\d+)?}$', raw)


async def test_push_bulk_groups_by_queue_in_one_round_trip(
    redis_url: str, redis_client: redis.Redis
) -> None:
    jobs = [
        Job.new("A", [0], queue="a"),
        Job.new("A", [1], queue="b"),
        Job.new("A", [2], queue="a"),
    ]
    async with RedisBridge(redis_url) as bridge:
        client = SidekiqClient(bridge, clock=_clock)
        assert await client.push_bulk([]) == []
        before = bridge.statistics().round_trips
        pushed = await client.push_bulk(jobs)
        assert bridge.statistics().round_trips - before == 1
    assert [job.args for job in pushed] == [[0], [1], [2]]
    assert {job.get("enqueued_at") for job in pushed} == {NOW}
    assert redis_client.smembers("queues") == {b"a", b"b"}
    # The first job of the batch is the next to pop (rightmost).
    assert _members(redis_client, "queue:a") == [pushed[2].raw, pushed[0].raw]
    assert _members(redis_client, "queue:b") == [pushed[1].raw]


async def test_schedule_strips_at_and_enqueued_at(
    redis_url: str, redis_client: redis.Redis
) -> None:
    job = Job.new("A", [], jid="c" * 24, at=123.0, enqueued_at=5.0)
    async with RedisBridge(redis_url) as bridge:
        stored = await SidekiqClient(bridge, clock=_clock).schedule(job, 1800000000)
    assert "at" not in stored
    assert "enqueued_at" not in stored
    assert stored.get("created_at") == NOW
    ((member, score),) = _scored(redis_client, "schedule")
    assert member.decode() == stored.raw
    assert score == 1800000000.0
    assert not redis_client.exists("queues")


async def test_schedule_score_is_float_seconds(redis_url: str, redis_client: redis.Redis) -> None:
    async with RedisBridge(redis_url) as bridge:
        await SidekiqClient(bridge).schedule(Job.new("A", []), LATER)
    ((_, score),) = _scored(redis_client, "schedule")
    assert score == pytest.approx(LATER)


async def test_requeue_rpushes_raw_text_to_the_right(
    redis_url: str, redis_client: redis.Redis
) -> None:
    odd = '{"args":[1.50],"class":"A","queue":"a","enqueued_at":1}'
    redis_client.lpush("queue:a", "older")
    async with RedisBridge(redis_url) as bridge:
        client = SidekiqClient(bridge)
        await client.requeue({})
        await client.requeue({"a": [odd], "b": ["x", "y"], "c": []})
    assert redis_client.lindex("queue:a", -1) == odd.encode()
    assert _members(redis_client, "queue:a") == ["older", odd]
    assert _members(redis_client, "queue:b") == ["x", "y"]
    assert not redis_client.exists("queue:c")
