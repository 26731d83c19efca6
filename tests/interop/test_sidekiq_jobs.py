"""Jobs cross between real Ruby Sidekiq (6.4) and patient-sidekiq on one Redis, both ways.

a. Ruby's client pushes, our ReliableFetch takes the exact text, oldest first.
b. Our client pushes, a real ``sidekiq`` server process runs the jobs.
c. Ruby's API reads the retry/dead/queue entries we wrote, and its "retry now" output is
   fetched by us with the retry bookkeeping Ruby left.
d. Our poller moves Ruby-scheduled jobs that are due, and only those.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
import redis

from patient_sidekiq.redis_io.redis_bridge import RedisBridge, raise_first_error
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.fetch import ReliableFetch
from patient_sidekiq.sidekiq.heartbeat import make_identity
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.retry import RetryPolicy, failure_commands, prepare_failure
from patient_sidekiq.sidekiq.scheduled import Poller
from patient_sidekiq.sidekiq.unit_of_work import QueueOrder, UnitOfWork
from tests.interop.conftest import SIDEKIQ_CLIENT, run_ruby
from tests.interop.sidekiq_server import PERFORMED, QUEUE, performed, sidekiq_server

pytestmark = [pytest.mark.interop, pytest.mark.integration]

ERROR = ("PatientHttp::MaxCapacityError", "too busy", ["a.rb:1:in `x'"])

# Pushes with Sidekiq::Client and reports every item exactly as Ruby pushed it: a client
# middleware keeps the hash that atomic_push then stamps with enqueued_at and dumps.
RUBY_PUSH = r"""
require "json"
require "sidekiq"
require "sidekiq/api"
input = JSON.parse($stdin.read)
Sidekiq.logger = Logger.new(nil)
$pushed = []
class Capture
  def call(_worker, item, _queue, _pool)
    $pushed << item
    yield
  end
end
Sidekiq.configure_client do |c|
  c.redis = {url: input["url"]}
  c.client_middleware { |chain| chain.add Capture }
end
input["singles"].each do |args|
  Sidekiq::Client.push("class" => "Some::Job", "queue" => "pyq", "args" => args,
    "tags" => ["t"])
end
Sidekiq::Client.push_bulk("class" => "Some::Job", "queue" => "pyq", "args" => input["bulk"],
  "tags" => ["t"])
puts JSON.generate({"items" => $pushed, "texts" => $pushed.map { |i| Sidekiq.dump_json(i) }})
"""

# Reads what Python filed into retry/dead/queue through Sidekiq's API, then "retry all".
RUBY_INSPECT_AND_RETRY = (
    SIDEKIQ_CLIENT
    + r"""
retries = Sidekiq::RetrySet.new.map do |e|
  i = e.item
  {"jid" => e.jid, "score" => e.score, "queue" => e.queue, "klass" => e.klass,
   "args" => e.args, "retry_count" => i["retry_count"], "error_class" => i["error_class"],
   "error_message" => i["error_message"], "failed_at" => i["failed_at"],
   "failed_at_type" => i["failed_at"].class.name, "retried_at_type" => i["retried_at"].class.name,
   "backtrace" => e.error_backtrace, "error" => e.error?}
end
dead = Sidekiq::DeadSet.new.map { |e| {"jid" => e.jid, "error_class" => e["error_class"]} }
queue = Sidekiq::Queue.new("pyq")
report = {"retries" => retries, "retry_size" => Sidekiq::RetrySet.new.size,
  "dead" => dead, "dead_size" => Sidekiq::DeadSet.new.size,
  "queue_size" => queue.size, "latency" => queue.latency,
  "queue_jids" => queue.map(&:jid)}
Sidekiq::RetrySet.new.retry_all
report["retry_size_after"] = Sidekiq::RetrySet.new.size
report["queue_size_after"] = Sidekiq::Queue.new("pyq").size
puts JSON.generate(report)
"""
)

RUBY_SCHEDULE = (
    SIDEKIQ_CLIENT
    + r"""
due = Sidekiq::Client.push("class" => "X", "queue" => "pyq", "args" => [7],
  "at" => Time.now.to_f - 5)
future = Sidekiq::Client.push("class" => "X", "queue" => "pyq", "args" => [8],
  "at" => Time.now.to_f + 3600)
puts JSON.generate({"due" => due, "future" => future})
"""
)

RUBY_AFTER_POLL = (
    SIDEKIQ_CLIENT
    + r"""
scheduled = Sidekiq::ScheduledSet.new
queue = Sidekiq::Queue.new("pyq")
puts JSON.generate({"scheduled_size" => scheduled.size, "scheduled_jids" => scheduled.map(&:jid),
  "queue_jids" => queue.map(&:jid), "latency" => queue.latency,
  "queues" => Sidekiq::Queue.all.map(&:name)})
"""
)


def _decoded(items: list[bytes]) -> list[str]:
    return [item.decode("utf-8") for item in items]


async def _fetch_all(
    bridge: RedisBridge, redis_url: str, queue: str, expected: int
) -> tuple[ReliableFetch, list[UnitOfWork]]:
    fetch = ReliableFetch(
        bridge, redis_url, identity=make_identity("pybox", 4242), queues=QueueOrder([(queue, 0)])
    )
    works = await fetch.fetch(expected + 10)
    assert len(works) == expected
    return fetch, works


async def test_ruby_pushed_jobs_are_fetched_byte_exact_in_fifo_order(
    redis_url: str, redis_client: redis.Redis
) -> None:
    singles = [[1, "é", {"a": [True, None, 1.5]}], [2, "é", {"a": [True, None, 1.5]}], [3]]
    bulk = [[4, "ü"], [5, {"n": -0.1}]]
    seen = run_ruby(RUBY_PUSH, {"url": redis_url, "singles": singles, "bulk": bulk})
    items: list[dict[str, Any]] = seen["items"]
    assert [item["args"] for item in items] == singles + bulk
    # What Ruby LPUSHed, oldest (next to pop) last in the list.
    stored = _decoded(redis_client.lrange("queue:pyq", 0, -1))
    assert stored[::-1] == seen["texts"]
    assert redis_client.smembers("queues") == {b"pyq"}

    async with RedisBridge(redis_url) as bridge:
        fetch, works = await _fetch_all(bridge, redis_url, "pyq", len(items))
        try:
            assert [work.raw for work in works] == seen["texts"]
            assert {work.queue for work in works} == {"pyq"}
            for work, item in zip(works, items, strict=True):
                job = Job.parse(work.raw)
                assert job.to_dict() == item
                assert list(job.data) == list(item)  # Ruby's key order survives
                assert job.raw == work.raw
                assert job.class_name == "Some::Job"
                assert job.jid == item["jid"]
                assert job.enqueued_at == item["enqueued_at"]
                assert isinstance(job.enqueued_at, float)
                assert job.created_at == item["created_at"]
            assert redis_client.llen("queue:pyq") == 0
            for work in works:
                assert await fetch.acknowledge(work)
            assert redis_client.llen(works[0].inprogress_key) == 0
        finally:
            await fetch.close()


async def test_real_sidekiq_server_runs_python_pushed_jobs(
    redis_url: str, redis_client: redis.Redis
) -> None:
    args: list[Any] = [1, "x", {"k": 2.5}]
    with sidekiq_server(redis_url) as server:
        async with RedisBridge(redis_url) as bridge:
            client = SidekiqClient(bridge)
            single = await client.push(Job.new("Interop::RecordingJob", args, queue=QUEUE))
            bulk = await client.push_bulk(
                [Job.new("Interop::RecordingJob", [n, "é", {"k": [None, True]}], queue=QUEUE)
                 for n in (2, 3)]
            )  # fmt: skip
        pushed = [single, *bulk]
        records = performed(redis_client, len(pushed))
        assert len(records) == len(pushed), server.output()
    ran = {record["jid"]: record for record in map(json.loads, records)}
    assert ran == {
        job.jid: {"jid": job.jid, "args": job.args, "class": "Interop::RecordingJob"}
        for job in pushed
    }
    assert ran[single.jid]["args"] == [1, "x", {"k": 2.5}]
    # Nothing failed on the Ruby side, nothing is left over.
    assert redis_client.zcard("retry") == 0
    assert redis_client.zcard("dead") == 0
    assert redis_client.llen(f"queue:{QUEUE}") == 0
    assert redis_client.llen(PERFORMED) == len(pushed)


async def test_ruby_api_reads_python_failures_and_retry_now_comes_back(
    redis_url: str, redis_client: redis.Redis
) -> None:
    policy = RetryPolicy(rng=random.Random(7))
    first = Job.new("PatientHttp::Sidekiq::RequestWorker", [1, "é"], queue="pyq", backtrace=True)
    again = Job.new(
        "PatientHttp::Sidekiq::RequestWorker",
        [2],
        queue="pyq",
        retry_count=4,
        failed_at=time.time() - 3600,
        error_class="Old",
    )
    doomed = Job.new("PatientHttp::Sidekiq::RequestWorker", [3], queue="pyq", retry=0)
    async with RedisBridge(redis_url) as bridge:
        client = SidekiqClient(bridge)
        await client.push_bulk([first, again, doomed])
        fetch, works = await _fetch_all(bridge, redis_url, "pyq", 3)
        try:
            outcomes = [
                prepare_failure(Job.parse(work.raw), ERROR, queue=work.queue, policy=policy)
                for work in works
            ]
            assert [o.kind for o in outcomes] == ["retry", "retry", "dead"]
            for outcome, work in zip(outcomes, works, strict=True):
                raise_first_error(await bridge.transaction(failure_commands(outcome, policy)))
                assert await fetch.acknowledge(work)
            latency_job = await client.push(Job.new("Plain", [0], queue="pyq"))
            before = time.time()
            seen = run_ruby(RUBY_INSPECT_AND_RETRY, {"url": redis_url})
            elapsed = time.time() - before

            filed = {o.job.jid: o for o in outcomes}
            assert seen["retry_size"] == 2
            assert sorted(r["jid"] for r in seen["retries"]) == sorted([first.jid, again.jid])
            for entry in seen["retries"]:
                outcome = filed[entry["jid"]]
                assert outcome.score is not None
                assert entry["score"] == pytest.approx(outcome.score, abs=1e-6)
                assert entry["queue"] == "pyq"
                assert entry["klass"] == "PatientHttp::Sidekiq::RequestWorker"
                assert entry["args"] == outcome.job.args
                assert entry["retry_count"] == outcome.job.retry_count
                assert entry["error_class"] == "PatientHttp::MaxCapacityError"
                assert entry["error_message"] == "too busy"
                assert entry["error"] is True
                assert entry["failed_at_type"] == "Float"
                assert entry["failed_at"] == outcome.job["failed_at"]
            by_jid = {entry["jid"]: entry for entry in seen["retries"]}
            # First failure: retry_count 0, failed_at now, the whole backtrace (backtrace: true).
            assert by_jid[first.jid]["retry_count"] == 0
            assert by_jid[first.jid]["backtrace"] == ERROR[2]
            assert by_jid[first.jid]["failed_at"] == pytest.approx(time.time(), abs=60)
            assert by_jid[first.jid]["retried_at_type"] == "NilClass"
            # A later failure: count + 1, failed_at kept, retried_at stamped, no backtrace.
            assert by_jid[again.jid]["retry_count"] == 5
            assert by_jid[again.jid]["failed_at"] == again["failed_at"]
            assert by_jid[again.jid]["retried_at_type"] == "Float"
            assert by_jid[again.jid]["backtrace"] is None

            assert seen["dead_size"] == 1
            assert seen["dead"] == [
                {"jid": doomed.jid, "error_class": "PatientHttp::MaxCapacityError"}
            ]
            assert seen["queue_size"] == 1
            assert seen["queue_jids"] == [latency_job.jid]
            # enqueued_at in float seconds: Ruby's latency is a small non-negative number.
            assert 0 <= seen["latency"] <= elapsed + 1

            # Retry now (RetrySet#retry_all): both retries went back to pyq.
            assert seen["retry_size_after"] == 0
            assert seen["queue_size_after"] == 3
            assert redis_client.zcard("retry") == 0
            queued = _decoded(redis_client.lrange("queue:pyq", 0, -1))[::-1]
            back = await fetch.fetch(10)
            assert [work.raw for work in back] == queued
            assert back[0].raw == latency_job.raw
            retried = {job.jid: job for job in (Job.parse(work.raw) for work in back[1:])}
            assert set(retried) == {first.jid, again.jid}
            for jid, job in retried.items():
                before_retry = filed[jid].job
                # Sidekiq 6.4's SortedEntry#retry decrements retry_count (0 becomes -1).
                assert job.retry_count == before_retry["retry_count"] - 1
                assert job.enqueued_at is not None
                assert before_retry.enqueued_at is not None
                assert job.enqueued_at >= before_retry.enqueued_at
                assert job.created_at == before_retry.created_at
                unchanged = {
                    k: v for k, v in job.data.items() if k not in ("retry_count", "enqueued_at")
                }
                assert unchanged == {
                    k: v
                    for k, v in before_retry.data.items()
                    if k not in ("retry_count", "enqueued_at")
                }
                assert list(job.data) == list(before_retry.data)
            assert retried[first.jid].retry_count == -1
            assert retried[again.jid].retry_count == 4
            # Failing the -1 job again gives retry_count 0 with retried_at, as Ruby 6.4 would.
            refailed = prepare_failure(retried[first.jid], ERROR, queue="pyq", policy=policy)
            assert refailed.job.retry_count == 0
            assert "retried_at" in refailed.job
        finally:
            await fetch.close()


async def test_poller_moves_only_due_ruby_scheduled_jobs(
    redis_url: str, redis_client: redis.Redis
) -> None:
    pushed = run_ruby(RUBY_SCHEDULE, {"url": redis_url})
    members = {
        Job.parse(raw).jid: (raw.decode("utf-8"), score)
        for raw, score in redis_client.zrange("schedule", 0, -1, withscores=True)
    }
    assert set(members) == {pushed["due"], pushed["future"]}
    due_raw, due_score = members[pushed["due"]]
    assert due_score < time.time()
    assert "enqueued_at" not in Job.parse(due_raw)

    identity = make_identity("pybox", 4242)
    async with RedisBridge(redis_url) as bridge:
        poller = Poller(bridge, SidekiqClient(bridge), identity=identity, policy=RetryPolicy())
        before = time.time()
        assert await poller.enqueue_due() == 1
        after = time.time()
        assert await poller.enqueue_due() == 0

    [moved_raw] = _decoded(redis_client.lrange("queue:pyq", 0, -1))
    # Ruby's text verbatim, with only a fresh float enqueued_at appended (as Client.push does).
    prefix = due_raw.removesuffix("}") + ',"enqueued_at":'
    assert moved_raw.startswith(prefix)
    assert moved_raw.endswith("}")
    enqueued_at = json.loads(moved_raw[len(prefix) : -1])
    assert isinstance(enqueued_at, float)
    assert before <= enqueued_at <= after
    assert Job.parse(moved_raw).without("enqueued_at").to_dict() == Job.parse(due_raw).to_dict()
    # The future job stays scheduled, untouched; nothing is left in progress.
    assert redis_client.zrange("schedule", 0, -1) == [members[pushed["future"]][0].encode()]
    assert redis_client.llen(f"patient_sidekiq:inprogress:{identity}:pyq") == 0

    seen = run_ruby(RUBY_AFTER_POLL, {"url": redis_url})
    assert seen["scheduled_size"] == 1
    assert seen["scheduled_jids"] == [pushed["future"]]
    assert seen["queue_jids"] == [pushed["due"]]
    assert seen["queues"] == ["pyq"]
    assert 0 <= seen["latency"] < 30
