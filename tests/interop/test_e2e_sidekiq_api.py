"""Ruby's Sidekiq API (what the Web UI shows and does) on a running ``patient-sidekiq run``.

Busy page: ``Sidekiq::ProcessSet`` lists the Python process with its settings and busy
count, ``Sidekiq::Workers`` its running RequestWorker jobs. Retries and Dead: jobs the
Python worker filed are read by ``Sidekiq::RetrySet``/``DeadSet`` with every field the
pages show, and "Retry now" from Ruby sends one back through Python. ``quiet!`` and
``stop!`` from Ruby quiet and stop the Python process. The last test stops the worker.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from patient_sidekiq import keys
from tests.interop.e2e_harness import E2E, REQUEST_QUEUE, e2e_stack, identities_of

pytestmark = [pytest.mark.interop, pytest.mark.integration]

REQUEST_WORKER = "PatientHttp::Sidekiq::RequestWorker"
CONCURRENCY = 25
TAG = "interop-py"
# A heartbeat is 10 s apart; a wait for the next one needs more.
BEAT_TIMEOUT = 25.0

BUSY_PAGE = r"""
processes = Sidekiq::ProcessSet.new.map do |p|
  {"identity" => p.identity, "hostname" => p["hostname"], "pid" => p["pid"],
   "tag" => p.tag, "labels" => p.labels, "queues" => p["queues"],
   "concurrency" => p["concurrency"], "busy" => p["busy"], "quiet" => p.stopping?,
   "started_at" => p["started_at"], "beat" => p["beat"], "version" => p["version"]}
end
work = Sidekiq::Workers.new.map do |process_id, thread_id, w|
  # Sidekiq 6.4 yields a Hash, 7.x a Sidekiq::Work
  payload, queue, run_at =
    w.is_a?(Hash) ? [w["payload"], w["queue"], w["run_at"]] : [w.payload, w.queue, w.run_at.to_f]
  payload = JSON.parse(payload) if payload.is_a?(String)
  record = Sidekiq::JobRecord.new(payload)
  {"process" => process_id, "thread" => thread_id, "queue" => queue,
   "run_at" => run_at, "class" => record.display_class, "jid" => record.jid,
   "args" => record.display_args}
end
puts JSON.generate({"processes" => processes, "work" => work, "size" => Sidekiq::Workers.new.size})
"""

FAILED_JOBS = r"""
entry = lambda do |j|
  {"jid" => j.jid, "class" => j.display_class, "args" => j.display_args, "queue" => j.queue,
   "error_class" => j["error_class"], "error_message" => j["error_message"],
   "retry_count" => j["retry_count"], "failed_at" => j["failed_at"],
   "retried_at" => j["retried_at"], "at" => j.at.to_f, "enqueued_at" => j.enqueued_at&.to_f}
end
retries = Sidekiq::RetrySet.new
if input["retry_now"]
  retries.find_job(input["retry_now"]).retry
end
puts JSON.generate({"retry" => retries.map(&entry), "dead" => Sidekiq::DeadSet.new.map(&entry)})
"""

PUSH = r"""
jids = input["jobs"].map { |job| Sidekiq::Client.push(job) }
puts JSON.generate(jids)
"""

SIGNAL = r"""
process = Sidekiq::ProcessSet.new.find { |p| p["pid"] == input["pid"] }
process.public_send(input["signal"])
puts JSON.generate(process.identity)
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[E2E]:
    options = ["-c", str(CONCURRENCY), "-g", TAG]
    with e2e_stack(python_options=options) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(stack: E2E) -> None:
    stack.reset()


def _identity(stack: E2E) -> str:
    [identity] = identities_of(stack.redis, stack.python_worker())
    return identity


def test_busy_page_shows_the_python_process_and_its_running_jobs(stack: E2E) -> None:
    identity = _identity(stack)
    enqueued = stack.ruby_enqueue(
        [
            {"url": stack.url(f"/slow?seconds=14&n={n}"), "callback": "Interop::Recorder"}
            for n in range(2)
        ]
    )
    stack.wait_until(
        lambda: stack.redis.hget(identity, "busy") == b"2",
        "a heartbeat reports both jobs busy",
        BEAT_TIMEOUT,
    )
    seen = stack.ruby(BUSY_PAGE)

    [process] = [p for p in seen["processes"] if p["identity"] == identity]
    assert process["hostname"] == socket.gethostname()
    assert process["pid"] == stack.python_worker().process.pid
    assert process["tag"] == TAG
    assert process["labels"] == ["requests"]  # its role, beside the callbacks identity
    assert process["queues"] == [REQUEST_QUEUE]
    assert process["concurrency"] == CONCURRENCY
    assert process["busy"] == 2
    assert process["quiet"] is False
    assert time.time() - 120 < process["started_at"] <= process["beat"] <= time.time() + 1
    assert process["version"]

    mine = [w for w in seen["work"] if w["process"] == identity]
    assert seen["size"] == 2
    assert sorted(w["jid"] for w in mine) == sorted(e["jid"] for e in enqueued)
    for work in mine:
        assert work["queue"] == REQUEST_QUEUE
        assert work["class"] == REQUEST_WORKER
        assert abs(work["run_at"] - time.time()) < 60
        request = work["args"][0]
        assert request["http_method"] == "get"
        assert request["url"].startswith(stack.url("/slow?seconds=14"))
        assert work["args"][1] == "Interop::Recorder"

    stack.records([e["request_id"] for e in enqueued])


def test_retries_and_dead_jobs_filed_by_python_read_in_ruby(stack: E2E) -> None:
    request = {"http_method": "get", "url": stack.url("/echo")}
    retried, dead = stack.ruby(
        PUSH,
        {
            "jobs": [
                # Two arguments where RequestWorker takes five: retried (retry: 3).
                {"class": REQUEST_WORKER, "queue": REQUEST_QUEUE, "retry": 3,
                 "args": [request, "Interop::Recorder"]},
                # Request data that is not an object, and no retries: straight to Dead.
                {"class": REQUEST_WORKER, "queue": REQUEST_QUEUE, "retry": 0,
                 "args": ["GET /echo", "Interop::Recorder", False, None, "rid-dead"]},
            ]
        },
    )  # fmt: skip
    stack.wait_until(
        lambda: stack.redis.zcard(keys.RETRY) == 1 and stack.redis.zcard(keys.DEAD) == 1,
        "Python filed both jobs",
    )
    failed = stack.ruby(FAILED_JOBS)

    [first] = failed["retry"]
    assert first["jid"] == retried
    assert first["class"] == REQUEST_WORKER
    assert first["args"] == [request, "Interop::Recorder"]
    assert first["queue"] == REQUEST_QUEUE
    assert first["error_class"] == "ArgumentError"
    assert first["error_message"] == "wrong number of arguments (given 2, expected 5..6)"
    assert first["retry_count"] == 0
    assert first["retried_at"] is None
    # Sidekiq's first backoff (6 and 7 alike): 15 s plus up to 9 s of jitter.
    assert first["failed_at"] + 15 <= first["at"] <= first["failed_at"] + 25
    assert first["enqueued_at"] <= first["failed_at"]

    [buried] = failed["dead"]
    assert buried["jid"] == dead
    assert buried["class"] == REQUEST_WORKER
    assert buried["args"] == ["GET /echo", "Interop::Recorder", False, None, "rid-dead"]
    assert buried["error_class"] == "ArgumentError"
    assert "request data must be a JSON object" in buried["error_message"]
    assert buried["retry_count"] == 0
    assert abs(buried["at"] - buried["failed_at"]) < 1  # Dead is scored by the time of death

    # "Retry now" from Ruby: Sidekiq (6 and 7) lowers retry_count by one and pushes the job; the
    # Python failure then raises it again and stamps retried_at, as Ruby would.
    stack.ruby(FAILED_JOBS, {"retry_now": retried})

    def filed_again() -> bool:
        raws: list[bytes] = stack.redis.zrange(keys.RETRY, 0, -1)
        return len(raws) == 1 and "retried_at" in json.loads(raws[0])

    stack.wait_until(filed_again, "Python filed the retried job again")
    [again] = stack.ruby(FAILED_JOBS)["retry"]
    assert again["jid"] == retried
    assert again["retry_count"] == 0
    assert again["retried_at"] >= first["failed_at"]
    assert again["failed_at"] == first["failed_at"]


def test_quiet_and_stop_from_ruby_reach_the_python_process(stack: E2E) -> None:
    worker = stack.python_worker()
    identity = stack.ruby(SIGNAL, {"pid": worker.process.pid, "signal": "quiet!"})
    assert identity == _identity(stack)
    stack.wait_until(
        lambda: stack.redis.hget(identity, "quiet") == b"true",
        "the process reports itself quiet",
        BEAT_TIMEOUT,
    )
    [process] = [p for p in stack.ruby(BUSY_PAGE)["processes"] if p["identity"] == identity]
    assert process["quiet"] is True

    # Quiet: a job enqueued now stays on its queue until the process has gone (the stop
    # signal is only read at the next beat, so it sits there for a while).
    [pending] = stack.ruby_enqueue([{"url": stack.url("/echo"), "callback": "Interop::Recorder"}])
    stack.ruby(SIGNAL, {"pid": worker.process.pid, "signal": "stop!"})
    worker.exit_expected = True
    stack.wait_until(lambda: worker.process.poll() is not None, "the worker exits", BEAT_TIMEOUT)
    assert worker.process.returncode == 0
    after = stack.ruby(BUSY_PAGE)
    assert identity not in [p["identity"] for p in after["processes"]]
    assert identity not in [w["process"] for w in after["work"]]
    [job] = stack.redis.lrange(keys.queue(REQUEST_QUEUE), 0, -1)
    assert json.loads(job)["jid"] == pending["jid"]
