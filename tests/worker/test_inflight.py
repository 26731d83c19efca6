"""InflightMonitor (the gem's in-flight keys, wire spec §7) against a real redis-server."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.worker.inflight import (
    InflightMonitor,
    gem_process_id,
    inflight_ttl,
    process_of_task,
    task_id,
)

NOW = 1_700_000_000.1234
NOW_MS = 1_700_000_000_123
ME = "pyhost:100:0123456789abcdef"
OTHER = "pyhost:200:fedcba9876543210"
DEAD = "rubyhost:300:00112233445566ff"
LIVE = "rubyhost:400:ffeeddccbbaa9988"
WORKER = "PatientHttp::Sidekiq::RequestWorker"


def job_raw(n: int, queue: str | None = "default") -> str:
    """A RequestWorker job with Ruby-ish spacing, so exact-text checks mean something."""
    fields = [f'"class":"{WORKER}"', f'"args":[{{"n":{n}}}]', f'"jid":"{n:024x}"']
    if queue is not None:
        fields.insert(0, f'"queue":"{queue}"')
    return "{" + ", ".join(fields) + "}"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def monitor(
    bridge: RedisBridge,
    clock: Clock,
    process_id: str = ME,
    *,
    client: SidekiqClient | None = None,
    max_connections: int = 256,
) -> InflightMonitor:
    return InflightMonitor(
        bridge,
        client if client is not None else SidekiqClient(bridge, clock=clock),
        process_id=process_id,
        max_connections=max_connections,
        heartbeat_interval=60.0,
        orphan_threshold=300.0,
        clock=clock,
    )


def text(value: Any) -> str | None:
    return None if value is None else bytes(value).decode()


def plant(client: redis.Redis, process_id: str, request_id: str, raw: str, score_ms: int) -> str:
    """Write an in-flight entry as another process (Ruby or Python) would have."""
    member = task_id(process_id, request_id)
    client.zadd(keys.INFLIGHT_INDEX, {member: score_ms})
    client.hset(keys.INFLIGHT_JOBS, member, raw)
    return member


def announce_live(client: redis.Redis, process_id: str) -> None:
    client.sadd(keys.GEM_PROCESSES, process_id)
    client.set(keys.gem_process_max_connections(process_id), 128, ex=120)


def queued(client: redis.Redis, queue: str = "default") -> list[Job]:
    return [Job.parse(raw) for raw in client.lrange(keys.queue(queue), 0, -1)]


# --- ids (no Redis) ---


def test_gem_process_id_format() -> None:
    pid = gem_process_id("web:1/a.example", 4242)
    assert re.fullmatch(r"web-1-a\.example:4242:[0-9a-f]{16}", pid)
    assert gem_process_id("h", 1) != gem_process_id("h", 1)
    assert re.fullmatch(r"[^:/]+:\d+:[0-9a-f]{16}", gem_process_id())


def test_task_ids() -> None:
    assert task_id(ME, "req-1") == f"{ME}/req-1"
    assert process_of_task(f"{ME}/req-1") == ME
    assert process_of_task(f"{ME}/odd/request") == ME


def test_inflight_ttl() -> None:
    assert inflight_ttl(300) == 3600
    assert inflight_ttl(2000) == 6000


def test_process_id_with_slash_is_refused() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        InflightMonitor(None, None, process_id="a/b", max_connections=1)  # type: ignore[arg-type]


# --- register / unregister ---


@pytest.mark.integration
async def test_register_writes_exact_keys(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    mon = monitor(bridge, Clock())
    raw = job_raw(1)
    await mon.register("req-1", raw)
    member = f"{ME}/req-1"
    score = redis_client.zscore(keys.INFLIGHT_INDEX, member)
    assert score == NOW_MS
    assert float(score).is_integer()
    assert text(redis_client.hget(keys.INFLIGHT_JOBS, member)) == raw
    for key in (keys.INFLIGHT_INDEX, keys.INFLIGHT_JOBS):
        assert 3590 <= redis_client.ttl(key) <= 3600


@pytest.mark.integration
async def test_hand_off_moves_the_job_from_in_progress_in_one_step(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    mon = monitor(bridge, Clock())
    raw, other = job_raw(1), job_raw(2)
    redis_client.lpush("inprogress", other, raw)
    await mon.hand_off("inprogress", "req-1", raw)
    assert [text(item) for item in redis_client.lrange("inprogress", 0, -1)] == [other]
    member = f"{ME}/req-1"
    assert redis_client.zscore(keys.INFLIGHT_INDEX, member) == NOW_MS
    assert text(redis_client.hget(keys.INFLIGHT_JOBS, member)) == raw
    for key in (keys.INFLIGHT_INDEX, keys.INFLIGHT_JOBS):
        assert 3590 <= redis_client.ttl(key) <= 3600


@pytest.mark.integration
async def test_register_ttl_follows_threshold(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    mon = InflightMonitor(
        bridge,
        SidekiqClient(bridge),
        process_id=ME,
        max_connections=8,
        orphan_threshold=2000,
    )
    await mon.register("req-1", job_raw(1))
    assert 5990 <= redis_client.ttl(keys.INFLIGHT_INDEX) <= 6000
    assert 5990 <= redis_client.ttl(keys.INFLIGHT_JOBS) <= 6000


@pytest.mark.integration
async def test_register_commands_join_a_callers_multi(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    """The hand-off: remove from an own in-progress list and register in one MULTI."""
    mon = monitor(bridge, Clock())
    raw = job_raw(2)
    redis_client.lpush("patient_sidekiq:inprogress:test:default", raw)
    commands: list[Sequence[Arg]] = [
        ("LREM", "patient_sidekiq:inprogress:test:default", -1, raw),
        *mon.register_commands("req-2", raw),
    ]
    replies = await bridge.transaction(commands)
    assert replies[0] == 1
    assert redis_client.llen("patient_sidekiq:inprogress:test:default") == 0
    assert text(redis_client.hget(keys.INFLIGHT_JOBS, f"{ME}/req-2")) == raw


@pytest.mark.integration
async def test_unregister_removes_both(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    mon = monitor(bridge, Clock())
    await mon.register("req-1", job_raw(1))
    await mon.register("req-2", job_raw(2))
    await mon.unregister("req-1")
    assert redis_client.zrange(keys.INFLIGHT_INDEX, 0, -1) == [f"{ME}/req-2".encode()]
    assert redis_client.hkeys(keys.INFLIGHT_JOBS) == [f"{ME}/req-2".encode()]
    assert mon.unregister_commands("req-2") == [
        ("ZREM", keys.INFLIGHT_INDEX, f"{ME}/req-2"),
        ("HDEL", keys.INFLIGHT_JOBS, f"{ME}/req-2"),
    ]


# --- heartbeat / leave ---


@pytest.mark.integration
async def test_heartbeat_refreshes_only_existing_tasks_and_announces(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    clock = Clock()
    mon = monitor(bridge, clock, max_connections=64)
    await mon.register("req-1", job_raw(1))
    clock.now += 30
    await mon.heartbeat(["req-1", "req-gone"])
    assert redis_client.zscore(keys.INFLIGHT_INDEX, f"{ME}/req-1") == NOW_MS + 30_000
    assert redis_client.zscore(keys.INFLIGHT_INDEX, f"{ME}/req-gone") is None
    assert redis_client.zcard(keys.INFLIGHT_INDEX) == 1
    assert redis_client.sismember(keys.GEM_PROCESSES, ME)
    max_key = keys.gem_process_max_connections(ME)
    assert max_key == f"sidekiq:patient_http:processes:{ME}:max_connections"
    assert text(redis_client.get(max_key)) == "64"
    assert 110 <= redis_client.ttl(max_key) <= 120
    assert 3590 <= redis_client.ttl(keys.GEM_PROCESSES) <= 3600


@pytest.mark.integration
async def test_heartbeat_batches_many_tasks(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    clock = Clock()
    mon = monitor(bridge, clock)
    ids = [f"req-{n}" for n in range(2500)]
    redis_client.zadd(keys.INFLIGHT_INDEX, {f"{ME}/{i}": 1 for i in ids})
    before = bridge.statistics().commands_sent
    await mon.heartbeat(ids)
    # 3 ZADD chunks + MULTI, 4 commands, EXEC
    assert bridge.statistics().commands_sent - before == 3 + 6
    pairs: list[tuple[bytes, float]] = redis_client.zrange(  # type: ignore[assignment]
        keys.INFLIGHT_INDEX, 0, -1, withscores=True
    )
    scores = {score for _, score in pairs}
    assert scores == {NOW_MS}


@pytest.mark.integration
async def test_heartbeat_without_tasks_still_announces(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    mon = monitor(bridge, Clock())
    await mon.heartbeat([])
    assert redis_client.sismember(keys.GEM_PROCESSES, ME)
    assert not redis_client.exists(keys.INFLIGHT_INDEX)


@pytest.mark.integration
async def test_leave(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    mon = monitor(bridge, Clock())
    await mon.heartbeat([])
    announce_live(redis_client, LIVE)
    await mon.leave()
    assert redis_client.smembers(keys.GEM_PROCESSES) == {LIVE.encode()}
    assert not redis_client.exists(keys.gem_process_max_connections(ME))


# --- sweep ---


@pytest.mark.integration
async def test_sweep_prunes_dead_process_then_reclaims(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    """The compatibility fix: a kill -9'd process stays in the set; its key expired."""
    clock = Clock()
    redis_client.sadd(keys.GEM_PROCESSES, DEAD)  # no max_connections key: it is gone
    raw = job_raw(7, queue="http")
    plant(redis_client, DEAD, "req-7", raw, NOW_MS - 301_000)
    mon = monitor(bridge, clock)
    assert await mon.sweep() == 1
    (pushed,) = queued(redis_client, "http")
    assert pushed.jid == f"{7:024x}"
    assert pushed.class_name == WORKER
    assert pushed.args == [{"n": 7}]
    assert pushed.enqueued_at == NOW
    assert redis_client.sismember(keys.QUEUES, "http")
    assert not redis_client.exists(keys.INFLIGHT_INDEX)
    assert not redis_client.exists(keys.INFLIGHT_JOBS)
    assert not redis_client.sismember(keys.GEM_PROCESSES, DEAD)
    # bookkeeping: last run recorded, lock released
    assert text(redis_client.get(keys.GC_LAST_RUN)) == str(NOW_MS)
    assert 89_000 <= redis_client.pttl(keys.GC_LAST_RUN) <= 90_000
    assert not redis_client.exists(keys.GC_LOCK)


@pytest.mark.integration
async def test_sweep_leaves_live_and_young_tasks(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    clock = Clock()
    announce_live(redis_client, LIVE)
    redis_client.sadd(keys.GEM_PROCESSES, DEAD)
    live = plant(redis_client, LIVE, "req-1", job_raw(1), NOW_MS - 1_000_000)
    young = plant(redis_client, DEAD, "req-2", job_raw(2), NOW_MS - 299_000)
    mine = plant(redis_client, ME, "req-3", job_raw(3), NOW_MS - 1_000_000)
    mon = monitor(bridge, clock)
    assert await mon.sweep() == 0
    assert not redis_client.exists(keys.queue("default"))
    assert {text(m) for m in redis_client.zrange(keys.INFLIGHT_INDEX, 0, -1)} == {
        live,
        young,
        mine,
    }
    assert len(redis_client.hkeys(keys.INFLIGHT_JOBS)) == 3
    assert redis_client.smembers(keys.GEM_PROCESSES) == {LIVE.encode()}  # DEAD pruned


@pytest.mark.integration
async def test_sweep_boundary_is_inclusive(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    plant(redis_client, DEAD, "req-1", job_raw(1), NOW_MS - 300_000)
    assert await monitor(bridge, Clock()).sweep() == 1
    assert len(queued(redis_client)) == 1


@pytest.mark.integration
async def test_sweep_reclaims_task_of_unlisted_process(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    """What the gem alone already recovers: the process id is not in the set at all."""
    plant(redis_client, DEAD, "req-1", job_raw(1), NOW_MS - 400_000)
    plant(redis_client, DEAD, "req-2", job_raw(2, queue=None), NOW_MS - 400_000)
    assert await monitor(bridge, Clock()).sweep() == 2
    assert sorted(job.jid or "" for job in queued(redis_client)) == [f"{1:024x}", f"{2:024x}"]


@pytest.mark.integration
async def test_sweep_skips_when_lock_is_held(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    redis_client.set(keys.GC_LOCK, OTHER, ex=120)
    plant(redis_client, DEAD, "req-1", job_raw(1), NOW_MS - 400_000)
    assert await monitor(bridge, Clock()).sweep() == 0
    assert redis_client.zcard(keys.INFLIGHT_INDEX) == 1
    assert text(redis_client.get(keys.GC_LOCK)) == OTHER
    assert not redis_client.exists(keys.GC_LAST_RUN)
    assert not redis_client.exists(keys.queue("default"))


@pytest.mark.integration
async def test_sweep_skips_when_last_run_is_recent(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    redis_client.set(keys.GC_LAST_RUN, NOW_MS - 59_000)
    plant(redis_client, DEAD, "req-1", job_raw(1), NOW_MS - 400_000)
    assert await monitor(bridge, Clock()).sweep() == 0
    assert not redis_client.exists(keys.GC_LOCK)
    assert redis_client.zcard(keys.INFLIGHT_INDEX) == 1
    assert text(redis_client.get(keys.GC_LAST_RUN)) == str(NOW_MS - 59_000)


@pytest.mark.integration
async def test_sweep_runs_when_last_run_is_old(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    redis_client.set(keys.GC_LAST_RUN, NOW_MS - 60_000)
    plant(redis_client, DEAD, "req-1", job_raw(1), NOW_MS - 400_000)
    assert await monitor(bridge, Clock()).sweep() == 1
    assert text(redis_client.get(keys.GC_LAST_RUN)) == str(NOW_MS)


@pytest.mark.integration
async def test_sweep_keeps_a_lock_that_is_no_longer_ours(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    """Our lock expired mid-sweep and another process took it: we must not delete it."""

    class StealingClient(SidekiqClient):
        def push_commands(self, job: Job) -> tuple[Job, list[Sequence[Arg]]]:
            redis_client.set(keys.GC_LOCK, OTHER, ex=120)
            return super().push_commands(job)

    clock = Clock()
    plant(redis_client, DEAD, "req-1", job_raw(1), NOW_MS - 400_000)
    mon = monitor(bridge, clock, client=StealingClient(bridge, clock=clock))
    assert await mon.sweep() == 1
    assert text(redis_client.get(keys.GC_LOCK)) == OTHER


@pytest.mark.integration
async def test_sweep_buries_unparseable_job(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    plant(redis_client, DEAD, "req-1", "{not json", NOW_MS - 400_000)
    plant(redis_client, DEAD, "req-2", job_raw(2), NOW_MS - 400_000)
    assert await monitor(bridge, Clock()).sweep() == 1
    # Wrapped with a Ruby error, the original text kept (poison.py).
    [dead] = [json.loads(raw) for raw in redis_client.zrange(keys.DEAD, 0, -1)]
    assert (dead["error_class"], dead["patient_sidekiq_raw"]) == ("JSON::ParserError", "{not json")
    assert len(queued(redis_client)) == 1
    assert not redis_client.exists(keys.INFLIGHT_INDEX)
    assert not redis_client.exists(keys.INFLIGHT_JOBS)


@pytest.mark.integration
async def test_sweep_removes_index_entry_without_job(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    redis_client.zadd(keys.INFLIGHT_INDEX, {f"{DEAD}/req-1": NOW_MS - 400_000})
    assert await monitor(bridge, Clock()).sweep() == 0
    assert not redis_client.exists(keys.INFLIGHT_INDEX)
    assert not redis_client.exists(keys.DEAD)


@pytest.mark.integration
async def test_reclaim_rechecks_atomically(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    """Between the scan and the Lua step, a heartbeat or a returning process wins."""
    mon = monitor(bridge, Clock())
    threshold = NOW_MS - 300_000
    raw = job_raw(1)
    # scanned as orphaned, then heartbeated
    plant(redis_client, DEAD, "req-1", raw, NOW_MS)
    assert not await mon._reclaim_one(f"{DEAD}/req-1", raw.encode(), threshold)
    # scanned as orphaned, then its process announced itself again
    plant(redis_client, LIVE, "req-2", raw, NOW_MS - 400_000)
    redis_client.sadd(keys.GEM_PROCESSES, LIVE)
    assert not await mon._reclaim_one(f"{LIVE}/req-2", raw.encode(), threshold)
    # already reclaimed by someone else
    assert not await mon._reclaim_one(f"{DEAD}/req-9", raw.encode(), threshold)
    assert redis_client.zcard(keys.INFLIGHT_INDEX) == 2
    assert not redis_client.exists(keys.queue("default"))


@pytest.mark.integration
async def test_concurrent_sweeps_reenqueue_once(redis_url: str, redis_client: redis.Redis) -> None:
    plant(redis_client, DEAD, "req-1", job_raw(1), NOW_MS - 400_000)
    redis_client.sadd(keys.GEM_PROCESSES, DEAD)
    counts: list[int] = []

    async def sweeper(process_id: str) -> None:
        async with RedisBridge(redis_url) as bridge:
            counts.append(await monitor(bridge, Clock(), process_id).sweep())

    async with trio.open_nursery() as nursery:
        for process_id in (ME, OTHER, LIVE):
            nursery.start_soon(sweeper, process_id)
    assert sorted(counts) == [0, 0, 1]
    assert redis_client.llen(keys.queue("default")) == 1


@pytest.mark.integration
async def test_concurrent_reclaims_without_lock_push_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Even past the lock (an expired one), the Lua hand-off pushes each orphan once."""
    for n in range(50):
        plant(redis_client, DEAD, f"req-{n}", job_raw(n), NOW_MS - 400_000)
    counts: list[int] = []

    async def reclaimer(process_id: str) -> None:
        async with RedisBridge(redis_url) as bridge:
            counts.append(await monitor(bridge, Clock(), process_id)._reclaim_orphans(NOW_MS))

    async with trio.open_nursery() as nursery:
        for process_id in (ME, OTHER, LIVE):
            nursery.start_soon(reclaimer, process_id)
    assert sum(counts) == 50
    jids = [job.jid for job in queued(redis_client)]
    assert len(jids) == len(set(jids)) == 50


@pytest.mark.integration
async def test_prune_never_removes_self(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    redis_client.sadd(keys.GEM_PROCESSES, ME, DEAD)
    announce_live(redis_client, LIVE)
    assert await monitor(bridge, Clock()).prune_processes() == [DEAD]
    assert redis_client.smembers(keys.GEM_PROCESSES) == {ME.encode(), LIVE.encode()}


def test_job_raw_helper_is_json() -> None:
    assert json.loads(job_raw(3))["jid"] == f"{3:024x}"
    assert "queue" not in json.loads(job_raw(3, queue=None))


@pytest.mark.integration
@pytest.mark.parametrize(
    "hostile",
    [
        job_raw(7).replace('"args":[{"n":7}]', '"args":[{"timeout":1e400}]'),  # infinity
        job_raw(7).replace('"n":7', '"n":"\\ud800"'),  # a lone surrogate escape
        job_raw(7).replace('"n":7', '"n":"\udcff"'),  # the byte 0xff, not UTF-8
        job_raw(7).replace('"n":7', '"n":' + "[" * 200 + "]" * 200),  # too deep
    ],
)
async def test_sweep_buries_an_unpushable_orphan_and_goes_on(
    bridge: RedisBridge, redis_client: redis.Redis, hostile: str
) -> None:
    """One orphan that cannot be re-pushed used to raise out of every sweep, forever."""
    raw = hostile.encode("utf-8", "surrogateescape")
    member = task_id(DEAD, "req-1")
    redis_client.zadd(keys.INFLIGHT_INDEX, {member: NOW_MS - 400_000})
    redis_client.hset(keys.INFLIGHT_JOBS, member, raw)
    plant(redis_client, DEAD, "req-2", job_raw(2), NOW_MS - 400_000)
    assert await monitor(bridge, Clock()).sweep() == 1
    assert len(queued(redis_client)) == 1
    [entry] = redis_client.zrange(keys.DEAD, 0, -1)
    data = json.loads(entry.decode("utf-8", "surrogateescape"))
    assert data["error_class"] in ("JSON::GeneratorError", "JSON::NestingError")
    assert data["error_message"]
    assert not redis_client.exists(keys.INFLIGHT_INDEX)
    assert not redis_client.exists(keys.INFLIGHT_JOBS)


@pytest.mark.integration
async def test_sweep_reclaims_an_orphan_whose_member_is_not_utf8(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    member = task_id(DEAD, "req-\xff").encode("latin-1")
    redis_client.zadd(keys.INFLIGHT_INDEX, {member: NOW_MS - 400_000})
    redis_client.hset(keys.INFLIGHT_JOBS, member, job_raw(3))
    assert await monitor(bridge, Clock()).sweep() == 1
    assert len(queued(redis_client)) == 1
    assert not redis_client.exists(keys.INFLIGHT_INDEX)
