"""Crash recovery across languages: a killed worker's requests run again, exactly once.

``patient-sidekiq run`` is killed with SIGKILL while its requests are in flight (the HTTP
app holds them in ``/slow``). What it leaves in ``sidekiq:patient_http:*`` is then swept
either by Ruby (the gem's Web tab, which prunes the dead process id, and the gem's
monitor-thread sweep with its atomic Lua check-and-remove and a normal Sidekiq push; see
``E2E.web_tab``/``E2E.sweep``) or by another Python process, and the requests complete with
exactly one Ruby callback each. The last scenario turns it around: the real gem's processor
is killed with SIGKILL mid-request (on the stand-in: its in-flight keys are written by
``task_monitor.rb register``) and Python recovers its requests.

No Python worker runs between tests: each test starts the ones it needs and stops them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from patient_sidekiq import keys
from tests.interop.e2e_harness import (
    E2E,
    MONITOR_SCRIPT,
    REQUEST_QUEUE,
    RUBY_CALLBACK_QUEUE,
    Child,
    e2e_stack,
)

pytestmark = [pytest.mark.interop, pytest.mark.integration]

INDEX = keys.INFLIGHT_INDEX
JOBS = keys.INFLIGHT_JOBS
PROCESSES = keys.GEM_PROCESSES
QUEUE = keys.queue(REQUEST_QUEUE)
SLOW_SECONDS = 2
REQUESTS = 4
# Short enough that a dead worker's requests are orphans within seconds.
FAST_RECOVERY = ["--heartbeat-interval", "1", "--orphan-threshold", "2"]


@pytest.fixture(scope="module")
def stack() -> Iterator[E2E]:
    with e2e_stack(python_options=None) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_state(stack: E2E) -> Iterator[None]:
    stack.reset()
    yield
    for child in list(stack.children):
        if child.name == "patient-sidekiq":
            child.stop()
            child.exit_expected = True
            stack.children.remove(child)
    stack.redis.delete(INDEX, JOBS, PROCESSES, QUEUE)


def _tasks_of(stack: E2E, worker: Child) -> list[str]:
    pid = str(worker.process.pid)
    members: list[bytes] = stack.redis.zrange(INDEX, 0, -1)
    return [m.decode() for m in members if m.decode().split(":")[1] == pid]


def _slow_requests(stack: E2E, tag: str) -> list[dict[str, Any]]:
    return stack.ruby_enqueue(
        [
            {
                "url": stack.url(f"/slow?seconds={SLOW_SECONDS}&n={n}"),
                "callback": "Interop::Recorder",
                "callback_args": {"tag": tag, "n": n},
            }
            for n in range(REQUESTS)
        ]
    )


def _kill_mid_flight(stack: E2E, tag: str) -> tuple[list[dict[str, Any]], Child, list[str]]:
    """Start a worker, give it slow requests, SIGKILL it once all are in flight."""
    worker = stack.start_python(["-c", "10", *FAST_RECOVERY])
    enqueued = _slow_requests(stack, tag)
    stack.wait_until(
        lambda: len(_tasks_of(stack, worker)) == REQUESTS, "every request is in flight"
    )
    tasks = _tasks_of(stack, worker)
    worker.kill()
    return enqueued, worker, tasks


def _assert_each_completed_once(stack: E2E, enqueued: list[dict[str, Any]], tag: str) -> None:
    ids = [item["request_id"] for item in enqueued]
    records = stack.records(ids)
    for n, item in enumerate(enqueued):
        record = records[item["request_id"]]
        assert record["runtime"] == "ruby"
        assert record["callback"] == "on_complete"
        assert record["status"] == 200
        assert record["body"] == "slow"
        assert record["callback_args"] == {"tag": tag, "n": n}
    # Everything settled: nothing in flight, nothing queued, and still one record each.
    stack.wait_until(lambda: stack.redis.zcard(INDEX) == 0, "the in-flight index is empty")
    assert stack.redis.hlen(JOBS) == 0
    assert stack.redis.llen(QUEUE) == 0
    assert stack.records(ids) == records


def test_a_ruby_sweep_recovers_a_killed_python_worker(stack: E2E) -> None:
    enqueued, dead, tasks = _kill_mid_flight(stack, "ruby-sweep")
    process_id = tasks[0].split("/")[0]
    assert {task.split("/", 1)[1] for task in tasks} == {e["request_id"] for e in enqueued}
    job_of = {task: json.loads(stack.redis.hget(JOBS, task) or b"null") for task in tasks}
    assert {job["jid"] for job in job_of.values()} == {e["jid"] for e in enqueued}
    marker = keys.gem_process_max_connections(process_id)
    stack.wait_until(lambda: not stack.redis.exists(marker), "the dead worker's marker expired")
    stack.wait_until(
        lambda: stack.redis.zrangebyscore(INDEX, "-inf", time.time() * 1000 - 2500),
        "the requests are older than the threshold",
    )

    # The gem's sweep alone skips every process id still in the processes set...
    first = stack.sweep(orphan_threshold=2, heartbeat_interval=1)
    assert first == {"requeued_task_ids": [], "requeued_jids": []}
    # ...until the Web tab prunes the dead one.
    assert stack.web_tab()["pruned"] == [process_id]
    stack.wait_until(lambda: not stack.redis.exists(keys.GC_LAST_RUN), "a new sweep")
    second = stack.sweep(orphan_threshold=2, heartbeat_interval=1)
    assert second["requeued_task_ids"] == sorted(tasks)
    assert second["requeued_jids"] == sorted(e["jid"] for e in enqueued)
    assert stack.redis.zcard(INDEX) == 0
    assert stack.redis.llen(QUEUE) == REQUESTS

    stack.start_python()
    _assert_each_completed_once(stack, enqueued, "ruby-sweep")
    assert dead.process.returncode == -9


def test_another_python_process_recovers_a_killed_python_worker(stack: E2E) -> None:
    enqueued, _dead, tasks = _kill_mid_flight(stack, "python-sweep")
    rescuer = stack.start_python(FAST_RECOVERY)
    _assert_each_completed_once(stack, enqueued, "python-sweep")
    # The rescuer pruned the dead process and re-ran its requests under its own id.
    members = {m.decode() for m in stack.redis.smembers(PROCESSES)}
    assert tasks[0].split("/")[0] not in members
    assert [m for m in members if m.split(":")[1] == str(rescuer.process.pid)]


def test_python_recovers_the_requests_of_a_killed_ruby_processor(stack: E2E) -> None:
    if stack.side.real:
        # The real gem's processor takes the jobs, registers them in flight and is killed:
        # its jobs are only in the in-flight keys, and its max_connections marker expires.
        ruby = stack.start_ruby_processor(
            queue=REQUEST_QUEUE,
            callback_queue=RUBY_CALLBACK_QUEUE,
            config={"heartbeat_interval": 1, "orphan_threshold": 2, "max_connections": 10},
        )
        enqueued = _slow_requests(stack, "ruby-died")
        stack.wait_until(
            lambda: len(_tasks_of(stack, ruby)) == REQUESTS, "the gem runs every request"
        )
        process_id = _tasks_of(stack, ruby)[0].split("/")[0]
        ruby.kill()
        assert stack.redis.llen(QUEUE) == 0
    else:
        # The stand-in has no processor: write what a dead Ruby processor leaves behind.
        enqueued = _slow_requests(stack, "ruby-died")
        jobs = [raw.decode() for raw in stack.redis.lrange(QUEUE, 0, -1)]
        stack.redis.delete(QUEUE)
        process_id = "ruby-host:4242:00112233aabbccdd"
        registered = stack.ruby_script(
            MONITOR_SCRIPT,
            {"action": "register", "process_id": process_id, "jobs": jobs, "alive": False,
             "age": 30},
        )  # fmt: skip
        assert sorted(registered["task_ids"]) == sorted(
            f"{process_id}/{e['request_id']}" for e in enqueued
        )

    stack.start_python(FAST_RECOVERY)
    _assert_each_completed_once(stack, enqueued, "ruby-died")
    assert process_id.encode() not in stack.redis.smembers(PROCESSES)
