"""ReliableFetch and QueueOrder against a real redis-server."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import redis
import trio
import trio.testing

from patient_sidekiq import keys
from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.fetch import ReliableFetch
from patient_sidekiq.sidekiq.unit_of_work import QueueOrder, UnitOfWork

IDENTITY = "workerhost:4242:0123456789ab"
DEAD = "deadhost:1:abcdefabcdef"
LIVE = "livehost:2:fedcbafedcba"


def job(n: int, queue: str = "default") -> str:
    return json.dumps({"class": "Job", "jid": f"{n:024x}", "queue": queue, "args": [n]})


def push(client: redis.Redis, queue: str, *jobs: str) -> None:
    """Push like Sidekiq's client: LPUSH, so the first pushed is the first popped."""
    for raw in jobs:
        client.lpush(keys.queue(queue), raw)


def strings(values: list[bytes | str]) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else value for value in values]


def make_fetch(
    bridge: RedisBridge, redis_url: str, *queues: str, identity: str = IDENTITY
) -> ReliableFetch:
    order = QueueOrder([(name, 0) for name in queues])
    return ReliableFetch(bridge, redis_url, identity=identity, queues=order, batch_max=100)


# --- QueueOrder (no Redis) ---


def test_strict_order_is_fixed_and_deduplicated() -> None:
    order = QueueOrder([("critical", 0), ("default", 0), ("critical", 0), ("low", 0)])
    assert order.strict
    assert order.order() == ["critical", "default", "low"]
    assert order.order() == ["critical", "default", "low"]


def test_weighted_order_first_queue_follows_weights() -> None:
    order = QueueOrder([("a", 3), ("b", 1), ("c", 0)], rng=random.Random(1234))
    assert not order.strict
    draws = [order.order() for _ in range(10_000)]
    assert all(sorted(draw) == ["a", "b", "c"] for draw in draws)
    firsts = Counter(draw[0] for draw in draws)
    # Sidekiq counts weight 0 as 1 in weighted mode: a 3/5, b 1/5, c 1/5.
    assert 5_700 < firsts["a"] < 6_300
    assert 1_700 < firsts["b"] < 2_300
    assert 1_700 < firsts["c"] < 2_300


def test_weighted_order_is_reproducible_with_a_seeded_rng() -> None:
    first = QueueOrder([("a", 2), ("b", 5)], rng=random.Random(7))
    second = QueueOrder([("a", 2), ("b", 5)], rng=random.Random(7))
    assert [first.order() for _ in range(50)] == [second.order() for _ in range(50)]


def test_queue_order_refuses_nonsense() -> None:
    with pytest.raises(ConfigurationError):
        QueueOrder([])
    with pytest.raises(ConfigurationError):
        QueueOrder([("a", -1)])


# --- fetch, acknowledge, requeue ---


@pytest.mark.integration
async def test_fetch_pops_oldest_first_across_queues_in_order(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    push(redis_client, "high", job(1, "high"), job(2, "high"))
    push(redis_client, "low", *(job(n, "low") for n in range(10, 15)))
    fetch = make_fetch(bridge, redis_url, "high", "low")
    warm_up = make_fetch(bridge, redis_url, "empty")
    assert await warm_up.fetch(1) == []  # loads the script: NOSCRIPT, SCRIPT LOAD, EVALSHA
    await warm_up.close()

    before = bridge.statistics().round_trips
    works = await fetch.fetch(4)
    assert bridge.statistics().round_trips == before + 1

    assert [w.raw for w in works] == [
        job(1, "high"),
        job(2, "high"),
        job(10, "low"),
        job(11, "low"),
    ]
    assert [w.queue for w in works] == ["high", "high", "low", "low"]
    high_ip, low_ip = keys.inprogress(IDENTITY, "high"), keys.inprogress(IDENTITY, "low")
    assert works[0] == UnitOfWork("high", job(1, "high"), high_ip)
    assert redis_client.llen(keys.queue("high")) == 0
    assert strings(redis_client.lrange(keys.queue("low"), 0, -1)) == [
        job(14, "low"),
        job(13, "low"),
        job(12, "low"),
    ]
    assert strings(redis_client.lrange(high_ip, 0, -1)) == [job(2, "high"), job(1, "high")]
    assert strings(redis_client.lrange(low_ip, 0, -1)) == [job(11, "low"), job(10, "low")]
    registry = redis_client.hgetall(keys.INPROGRESS_REGISTRY)
    assert json.loads(registry[high_ip.encode()]) == {"identity": IDENTITY, "queue": "high"}
    assert json.loads(registry[low_ip.encode()]) == {"identity": IDENTITY, "queue": "low"}

    rest = await fetch.fetch(1000)  # capped by batch_max=100, but only 3 are left
    assert [w.raw for w in rest] == [job(12, "low"), job(13, "low"), job(14, "low")]
    assert await fetch.fetch(10) == []
    await fetch.close()


@pytest.mark.integration
async def test_acknowledge_removes_exactly_that_job(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    push(redis_client, "default", job(1), job(2), job(3))
    fetch = make_fetch(bridge, redis_url, "default")
    works = await fetch.fetch(3)
    assert await fetch.acknowledge(works[1])
    inprogress = keys.inprogress(IDENTITY, "default")
    assert strings(redis_client.lrange(inprogress, 0, -1)) == [job(3), job(1)]
    assert not await fetch.acknowledge(works[1])  # already gone
    await fetch.close()


@pytest.mark.integration
async def test_requeue_puts_jobs_back_at_the_right_end(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    push(redis_client, "default", job(1), job(2), job(3))
    fetch = make_fetch(bridge, redis_url, "default")
    works = await fetch.fetch(2)
    await fetch.requeue(works)
    queue = keys.queue("default")
    assert redis_client.lindex(queue, -1) == job(1).encode()
    assert redis_client.llen(keys.inprogress(IDENTITY, "default")) == 0
    again = await fetch.fetch(3)  # the original order is kept
    assert [w.raw for w in again] == [job(1), job(2), job(3)]
    await fetch.close()


@pytest.mark.integration
async def test_fetch_survives_script_flush(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    push(redis_client, "default", job(1), job(2))
    fetch = make_fetch(bridge, redis_url, "default")
    assert [w.raw for w in await fetch.fetch(1)] == [job(1)]
    redis_client.script_flush()
    assert [w.raw for w in await fetch.fetch(1)] == [job(2)]
    await fetch.close()


@pytest.mark.integration
async def test_non_utf8_job_round_trips_exactly(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    raw = b'{"args":["\xff"]}'
    redis_client.lpush(keys.queue("default"), raw)
    fetch = make_fetch(bridge, redis_url, "default")
    (work,) = await fetch.fetch(1)
    await fetch.requeue([work])
    assert redis_client.lrange(keys.queue("default"), 0, -1) == [raw]
    (work,) = await fetch.fetch(1)
    assert await fetch.acknowledge(work)
    await fetch.close()


# --- recovery ---


@pytest.mark.integration
async def test_recover_moves_dead_process_jobs_back_in_order(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    push(redis_client, "default", *(job(n) for n in range(6)))
    push(redis_client, "other", job(100, "other"))
    original = redis_client.lrange(keys.queue("default"), 0, -1)
    dead = make_fetch(bridge, redis_url, "default", "other", identity=DEAD)
    assert len(await dead.fetch(4)) == 4  # 0..3 from default
    assert len(await dead.fetch(4)) == 3  # 4, 5 and other's job
    # A live process's list, and our own, must stay put.
    redis_client.hset(LIVE, "info", "x")
    redis_client.expire(LIVE, 60)
    live = make_fetch(bridge, redis_url, "default", identity=LIVE)
    redis_client.rpush(keys.queue("default"), "live-job")
    (live_work,) = await live.fetch(1)
    own_ip = keys.inprogress(IDENTITY, "default")
    redis_client.lpush(own_ip, "own-job")

    # A list the registry lost (the field is gone) is still found by SCAN.
    redis_client.hdel(keys.INPROGRESS_REGISTRY, keys.inprogress(DEAD, "other"))

    fetch = make_fetch(bridge, redis_url, "default")
    assert await fetch.recover() == 7
    assert redis_client.lrange(keys.queue("default"), 0, -1) == original
    assert strings(redis_client.lrange(keys.queue("other"), 0, -1)) == [job(100, "other")]
    assert not redis_client.exists(keys.inprogress(DEAD, "default"), keys.inprogress(DEAD, "other"))
    assert strings(redis_client.lrange(live_work.inprogress_key, 0, -1)) == ["live-job"]
    assert strings(redis_client.lrange(own_ip, 0, -1)) == ["own-job"]
    registry = set(strings(redis_client.hkeys(keys.INPROGRESS_REGISTRY)))
    assert registry == {live_work.inprogress_key}

    assert await fetch.recover() == 0  # twice: nothing duplicated
    assert redis_client.llen(keys.queue("default")) == 6
    for client in (dead, live, fetch):
        await client.close()


@pytest.mark.integration
async def test_recover_asks_is_alive_and_script_rechecks(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    push(redis_client, "default", job(1))
    dead = make_fetch(bridge, redis_url, "default", identity=DEAD)
    await dead.fetch(1)
    asked: list[str] = []

    async def claims_dead(identity: str) -> bool:
        asked.append(identity)
        return False

    redis_client.hset(DEAD, "info", "x")  # the hash exists: the script must refuse
    fetch = make_fetch(bridge, redis_url, "default")
    assert await fetch.recover(claims_dead) == 0
    assert asked == [DEAD]
    assert redis_client.llen(keys.inprogress(DEAD, "default")) == 1
    redis_client.delete(DEAD)
    assert await fetch.recover(claims_dead) == 1
    assert strings(redis_client.lrange(keys.queue("default"), 0, -1)) == [job(1)]
    await dead.close()
    await fetch.close()


# --- waiting ---


@pytest.mark.integration
async def test_wait_for_work_returns_a_job_pushed_while_waiting(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    fetch = make_fetch(bridge, redis_url, "default")
    assert await fetch.fetch(10) == []
    results: list[UnitOfWork | None] = []

    async def wait() -> None:
        results.append(await fetch.wait_for_work(1.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        push(redis_client, "default", job(7))
    (work,) = results
    assert work is not None
    assert work.raw == job(7)
    assert strings(redis_client.lrange(work.inprogress_key, 0, -1)) == [job(7)]
    assert redis_client.hexists(keys.INPROGRESS_REGISTRY, work.inprogress_key)
    assert await fetch.acknowledge(work)
    await fetch.close()


@pytest.mark.integration
async def test_wait_for_work_times_out_with_none(bridge: RedisBridge, redis_url: str) -> None:
    fetch = make_fetch(bridge, redis_url, "default")
    start = trio.current_time()
    assert await fetch.wait_for_work(0.2) is None
    assert trio.current_time() - start < 1.0
    assert await fetch.wait_for_work(0) is None
    await fetch.close()


@pytest.mark.integration
async def test_cancelled_wait_does_not_lose_a_job_pushed_after_cancel(
    bridge: RedisBridge, redis_url: str, redis_client: redis.Redis
) -> None:
    fetch = make_fetch(bridge, redis_url, "default")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch.wait_for_work, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
        push(redis_client, "default", job(9))  # the still-blocked BLMOVE takes it
    queue, inprogress = keys.queue("default"), keys.inprogress(IDENTITY, "default")
    assert redis_client.llen(queue) + redis_client.llen(inprogress) == 1
    # This design hands a job moved after cancellation straight back to its queue.
    assert strings(redis_client.lrange(queue, 0, -1)) == [job(9)]
    await fetch.close()
