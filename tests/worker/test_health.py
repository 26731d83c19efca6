"""Health (worker/health.py): judged from the launchers' real Redis connections, no I/O."""

from __future__ import annotations

import pytest
import trio

from patient_sidekiq.errors import RedisUnavailableError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher
from patient_sidekiq.worker.health import STALE_AFTER, HealthProbe, WorkerHealth
from tests.support.redis import RedisServer


async def test_running_and_answered_recently_is_healthy(redis_url: str) -> None:
    health = WorkerHealth(details=lambda: {"in_flight": 2})
    async with RedisBridge(redis_url) as bridge:
        health.watch("requests", bridge)
        assert health.check().reason == "starting"
        health.running()
        assert "answered never" in health.check().reason
        await bridge.execute("PING")
        report = health.check()
    assert report.healthy
    body = report.to_json()
    assert body["status"] == "ok"
    assert "reason" not in body
    assert (body["state"], body["in_flight"]) == ("running", 2)
    assert 0 <= body["redis_answered_seconds_ago"] < 1


async def test_a_failed_batch_makes_it_unhealthy_until_redis_answers_again(
    private_redis: RedisServer,
) -> None:
    health = WorkerHealth()
    health.running()
    async with RedisBridge(private_redis.url) as bridge:
        health.watch("requests", bridge)
        await bridge.execute("PING")
        assert health.check().healthy
        private_redis.kill()
        with pytest.raises(RedisUnavailableError):
            await bridge.execute("PING")
        report = health.check()
        assert not report.healthy
        assert report.reason.startswith("Redis unreachable (requests): ")
        assert report.to_json()["status"] == "unavailable"
        private_redis.start()
        await bridge.execute("PING")
        assert health.check().healthy


async def test_silence_longer_than_two_heartbeats_is_unhealthy(redis_url: str) -> None:
    now = [0.0]
    health = WorkerHealth(clock=lambda: now[0])
    health.running()
    async with RedisBridge(redis_url) as bridge:
        health.watch("requests", bridge)
        await bridge.execute("PING")
        answered = bridge.answered_at
        assert answered is not None
        now[0] = answered + STALE_AFTER
        assert health.check().healthy
        now[0] = answered + STALE_AFTER + 1
        report = health.check()
    assert not report.healthy
    assert report.reason == f"Redis has answered not for {STALE_AFTER + 1:.0f} s (requests)"


def test_stopping_is_unhealthy_and_says_so() -> None:
    health = WorkerHealth()
    health.running()
    health.stopping()
    health.running()  # a late "running" never undoes a stop
    report = health.check()
    assert (report.healthy, report.reason, report.details["state"]) == (
        False,
        "stopping",
        "stopping",
    )


async def test_the_probe_watches_its_launchers_connection_while_it_runs(redis_url: str) -> None:
    health = WorkerHealth()
    launcher = Launcher(
        WorkerSettings(redis_url=redis_url, queues=[("probe", 0)], handle_os_signals=False),
        Dispatcher(),
        services=[HealthProbe(health, "requests")],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(launcher.run)
        health.running()
        assert list(health.connections) == ["requests"]
        assert health.check().healthy  # the first heartbeat went through this connection
        launcher.stop()
    assert health.connections == {}
    assert health.check().reason == "no launcher is running"
