"""RedisOutage: one warning per outage, reports at growing gaps, backed-off retries with
jitter, one "reconnected" line; and a real launcher riding out a stopped redis-server."""

from __future__ import annotations

import logging
import random

import pytest
import redis
import trio
import trio.testing

from patient_sidekiq.errors import RedisCommandError, RedisUnavailableError
from patient_sidekiq.redis_io.outage import RedisOutage
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher, Work
from tests.support.redis import RedisServer
from tests.support.waiting import eventually

DOWN = RedisUnavailableError("Connection refused")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name.endswith("outage")]


def test_one_warning_then_reports_at_growing_gaps_then_one_reconnected_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = RedisOutage(clock=clock, rng=random.Random(1))
    caplog.set_level(logging.INFO)
    # 0.1 s apart for 70 s: 700 failures of two loops.
    for step in range(700):
        clock.now = 100.0 + step * 0.1
        outage.failed("fetch" if step % 2 else "heartbeat", DOWN)
    assert outage.down
    assert outage.attempts == 700
    lines = messages(caplog)
    assert lines[0] == "Redis unavailable (heartbeat: Connection refused): retrying"
    # Re-logged after 1, 2, 4, 8, 16, 30, 30 s: at 1, 3, 7, 15, 31, 61 s.
    seconds = [int(line.split("after ")[1].split(" s")[0]) for line in lines[1:]]
    assert seconds == [1, 3, 7, 15, 31, 61]
    assert all(line.startswith("Redis still unavailable after") for line in lines[1:])
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    clock.now += 0.5
    outage.succeeded()
    outage.succeeded()  # only the first success after an outage is news
    assert messages(caplog) == ["Redis reconnected after 70.4 s (700 failed attempts)"]
    assert caplog.records[0].levelno == logging.INFO
    assert not outage.down
    assert outage.attempts == 0
    # The next outage is logged afresh, its gaps starting at 1 s again.
    caplog.clear()
    outage.failed("poller", DOWN)
    clock.now += 1.0
    outage.failed("poller", DOWN)
    assert messages(caplog) == [
        "Redis unavailable (poller: Connection refused): retrying",
        "Redis still unavailable after 1 s (2 failed attempts; poller: Connection refused)",
    ]


def test_retry_delays_double_with_jitter_up_to_the_cap_and_start_over() -> None:
    outage = RedisOutage(rng=random.Random(7))
    retry = outage.retry_delay("fetch")
    delays = [retry.failed(DOWN) for _ in range(9)]
    nominal = [1, 2, 4, 8, 16, 30, 30, 30, 30]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected * 0.8 <= delay <= min(expected * 1.2, 30.0)
    assert len({round(d, 6) for d in delays[-3:]}) > 1  # jittered, not in step
    retry.succeeded()
    assert 0.8 <= retry.failed(DOWN) <= 1.2


def test_other_errors_are_the_loops_own_and_logged_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = RedisOutage()
    retry = outage.retry_delay("scheduled poller")
    with caplog.at_level(logging.WARNING):
        first = retry.failed(RedisCommandError("WRONGTYPE Operation"))
        second = retry.failed(RedisCommandError("WRONGTYPE Operation"))
    assert messages(caplog) == ["scheduled poller failed: WRONGTYPE Operation"] * 2
    assert not outage.down
    assert second > first  # backed off all the same


async def test_pause_ends_when_another_loop_gets_through() -> None:
    outage = RedisOutage()
    outage.retry_delay("fetch").failed(DOWN)
    woke = trio.Event()

    async def sleeper() -> None:
        await outage.pause(60)
        woke.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.testing.wait_all_tasks_blocked()
            outage.retry_delay("heartbeat").succeeded()
            await woke.wait()


async def test_a_wait_after_the_outage_ended_returns_at_once() -> None:
    outage = RedisOutage()
    fetch = outage.retry_delay("fetch")
    delay = fetch.failed(DOWN)
    outage.retry_delay("heartbeat").succeeded()  # between the failure and the wait
    with trio.fail_after(delay / 2):
        await fetch.wait(delay)
    # A loop's own error (not an outage) waits its delay in full.
    fetch.failed(RedisCommandError("NOSCRIPT"))
    with trio.move_on_after(0.05) as waited:
        await fetch.wait(5)
    assert waited.cancelled_caught


@pytest.mark.integration
async def test_a_launcher_logs_a_stopped_redis_once_and_its_return_once(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    done: list[str] = []

    async def handler(job: Job, work: Work) -> None:
        done.append(str(job.jid))

    settings = WorkerSettings(
        redis_url=private_redis.url,
        queues=[("q", 0)],
        heartbeat_interval=0.05,  # a beat every 50 ms: many failures while Redis is away
        poll_interval_average=0.05,
        handle_os_signals=False,
        identity="outagebox:1:aaaabbbbcccc",
    )
    launcher = Launcher(settings, Dispatcher({"Ok": handler}))
    outage = launcher.outage
    async with trio.open_nursery() as nursery:
        await nursery.start(launcher.run)
        await trio.to_thread.run_sync(private_redis.stop)
        await eventually(lambda: outage.attempts >= 20, what="20 failed attempts")
        down_lines = [line for line in messages(caplog) if "unavailable" in line]
        # 20 failures (heartbeat, fetch, poller …) in about a second: one line, perhaps a
        # second one after 1 s, never one per failure.
        assert down_lines[0].startswith("Redis unavailable (")
        assert len(down_lines) <= 2, down_lines
        await trio.to_thread.run_sync(private_redis.start)
        await eventually(lambda: not outage.down, what="the reconnection")
        client = redis.Redis.from_url(private_redis.url)
        client.lpush("queue:q", Job.new("Ok", [], queue="q", jid="a" * 24).raw)
        await eventually(lambda: done == ["a" * 24], what="a job after the outage")
        client.close()
        launcher.stop()
    reconnected = [line for line in messages(caplog) if "reconnected" in line]
    assert len(reconnected) == 1
    assert reconnected[0].startswith("Redis reconnected after ")
    # No loop logged its own failure line beside the outage's.
    others = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and not r.name.endswith("outage")
    ]
    assert not [m for m in others if "failed" in m], others
