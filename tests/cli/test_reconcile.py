"""A live worker gives back what lost replies left in its own records (issue 13, item 4).

When a reply is lost with the connection, the worker cannot know whether its command ran:
a pop may have recorded jobs in its in-progress list that it never got, a hand-off or a
shutdown re-enqueue may have left a task in the in-flight keys. Nobody else recovers a LIVE
process's records, so the worker reconciles its own, periodically and as soon as Redis
answers again. Both tests run a real ``patient-sidekiq run`` subprocess:

* the left-overs of lost replies, planted in the worker's own records, then its connections
  killed: both come back and run once, well before the periodic pass (30 s);
* a persistent Redis (append-only, ``appendfsync always``) SIGTERMed and SIGKILLed and
  restarted mid-run under a few hundred requests: every request ends once, nothing stays
  in progress or in flight, the worker never exits.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from patient_sidekiq import keys
from patient_sidekiq.sidekiq.job import Job
from tests.cli.test_cli_run import Api, Proc, wait_for, worker
from tests.cli.test_faults import CALLBACK_QUEUE, QUEUE, WORKER, answered_ids, request_data
from tests.support.redis import RedisServer
from tests.support.scripts import json_api

pytestmark = [pytest.mark.integration]

DELAY = 0.05  # seconds each request takes: keeps a few dozen in flight at every restart


@pytest.fixture
def slow_api() -> Iterator[Api]:
    """Answers every GET after ``DELAY`` with a small JSON body."""
    with json_api(delay=DELAY) as api:
        yield api


def job(api: Api, request_id: str) -> bytes:
    data = request_data(api.url(f"/r/{request_id}"))
    return Job.new(
        WORKER, [data, "MyApp::DoneCallback", False, None, request_id], queue=QUEUE
    ).raw.encode()


def leftovers(client: redis.Redis) -> dict[str, Any]:
    """What stays in any in-progress list or in the in-flight keys."""
    lists = {
        key.decode(): client.lrange(key, 0, -1)
        for key in client.scan_iter(keys.inprogress("*", "*"))
    }
    return {
        "in progress": {k: v for k, v in lists.items() if v},
        "in flight": client.hkeys(keys.INFLIGHT_JOBS),
        "index": client.zrange(keys.INFLIGHT_INDEX, 0, -1),
    }


def filed_request_ids(client: redis.Redis) -> list[str]:
    return [
        str(json.loads(raw)["args"][4])
        for name in (keys.RETRY, keys.DEAD)
        for raw in client.zrange(name, 0, -1)
    ]


def settled(client: redis.Redis, expected: set[str], proc: Proc, seconds: float) -> list[str]:
    """Wait until every expected request ended and nothing is queued, in progress or in
    flight; return the answered request ids (with repeats, if any)."""

    def done() -> list[str] | None:
        try:
            answered = answered_ids(client)
            ended = set(answered) | set(filed_request_ids(client))
            rest = leftovers(client)
            queued = client.llen(keys.queue(QUEUE))
        except redis.ConnectionError:
            return None
        if ended >= expected and not queued and not any(rest.values()):
            return answered
        return None

    try:
        result: list[str] = wait_for(done, "every request to end", proc, seconds)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nleft: {leftovers(client)}") from None
    return result


def test_lost_reply_leftovers_of_a_live_worker_come_back_and_run_once(
    redis_url: str, redis_client: redis.Redis, slow_api: Api, tmp_path: Path
) -> None:
    with worker(redis_url, tmp_path, "-c", "4") as proc:
        identity = wait_for(lambda: redis_client.smembers("processes"), "the worker", proc)
        gem_ids = wait_for(
            lambda: redis_client.smembers(keys.GEM_PROCESSES), "its in-flight announce", proc
        )
        (identity,), (gem_id,) = identity, gem_ids
        # A pop whose reply was lost: the job is in the worker's own list, held by nobody.
        own_list = keys.inprogress(identity.decode(), QUEUE)
        redis_client.hset(
            keys.INPROGRESS_REGISTRY,
            own_list,
            json.dumps({"identity": identity.decode(), "queue": QUEUE}, separators=(",", ":")),
        )
        redis_client.lpush(own_list, job(slow_api, "popped"))
        # A hand-off that ran although its reply was lost: the task is the worker's own,
        # with a fresh heartbeat, and nothing in the worker runs it.
        member = f"{gem_id.decode()}/handed-off"
        redis_client.zadd(keys.INFLIGHT_INDEX, {member: int(time.time() * 1000)})
        redis_client.hset(keys.INFLIGHT_JOBS, member, job(slow_api, "handed-off"))
        # Redis "comes back": every connection of the worker is cut once.
        redis_client.client_kill_filter(_type="normal", skipme=True)
        # Well before the periodic pass (30 s): the reconcile after the outage did it.
        answered = settled(redis_client, {"popped", "handed-off"}, proc, seconds=15)
        assert sorted(answered) == ["handed-off", "popped"]
        assert filed_request_ids(redis_client) == []
        assert proc.process.poll() is None, proc.tail()
        assert "reconcile:" in proc.stderr


@pytest.mark.faults
def test_redis_stopped_and_killed_mid_run_loses_nothing_and_leaves_nothing(
    persistent_redis: RedisServer, slow_api: Api, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(persistent_redis.url)
    count = 400
    ids = [f"req-{n}" for n in range(count)]
    client.lpush(keys.queue(QUEUE), *(job(slow_api, request_id) for request_id in ids))
    client.sadd(keys.QUEUES, QUEUE)

    def callbacks() -> int:
        try:
            return int(client.llen(keys.queue(CALLBACK_QUEUE)))
        except redis.ConnectionError:
            return 0

    stops: list[Callable[[], None]] = [
        persistent_redis.terminate,
        persistent_redis.kill,
        persistent_redis.terminate,
        persistent_redis.kill,
    ]
    with worker(persistent_redis.url, tmp_path, "-c", "32") as proc:
        for number, stop in enumerate(stops, 1):
            # Each outage lands while requests run: after another stretch of callbacks.
            wait_for(lambda n=number: callbacks() >= n * 60, f"progress {number}", proc, 60)
            noticed = proc.stderr.count("retrying")
            stop()
            # Redis stays away until the worker has felt it (a fetch or a result push failed).
            wait_for(lambda n=noticed: proc.stderr.count("retrying") > n, "the outage", proc)
            persistent_redis.start()
        answered = settled(client, set(ids), proc, seconds=120)
        repeated = {rid: n for rid, n in Counter(answered).items() if n > 1}
        assert not repeated, repeated
        filed = filed_request_ids(client)
        assert not set(filed) & set(answered), set(filed) & set(answered)
        assert set(answered) | set(filed) == set(ids)
        assert proc.process.poll() is None, proc.tail()
    client.close()
