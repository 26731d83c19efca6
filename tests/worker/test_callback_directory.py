"""Callback routing by the Python callback names every live worker publishes."""

from __future__ import annotations

import logging

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.worker.callback_directory import CallbackDirectory


def directory(bridge: RedisBridge, identity: str, *names: str) -> CallbackDirectory:
    return CallbackDirectory(bridge, identity, lambda: names)


async def test_a_worker_without_the_module_routes_by_what_others_published(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    redis_client.sadd(keys.PROCESSES, "with-module", "without-module", "ruby-process")
    with_module = directory(bridge, "with-module", "Billing::Done", "billing.callbacks.Done")
    without = directory(bridge, "without-module")
    await with_module.refresh()
    key = keys.python_callbacks("with-module")
    assert redis_client.smembers(key) == {b"Billing::Done", b"billing.callbacks.Done"}
    assert 0 < redis_client.ttl(key) <= 60  # lives as long as the heartbeat's process hash
    assert not without.is_python_callback("billing.callbacks.Done")  # not read yet
    await without.refresh()
    assert without.is_python_callback("billing.callbacks.Done")
    assert without.is_python_callback("Billing::Done")
    assert not without.is_python_callback("Billing::RubyOnly")
    assert not redis_client.exists(keys.python_callbacks("without-module"))  # nothing to publish


async def test_a_dead_workers_names_stop_counting(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    redis_client.sadd(keys.PROCESSES, "reader")
    # published by a process no longer in `processes` (Sidekiq pruned it): not a live worker
    redis_client.sadd(keys.python_callbacks("gone"), "old.Callback")
    reader = directory(bridge, "reader")
    await reader.refresh()
    assert not reader.is_python_callback("old.Callback")


async def test_an_unknown_python_looking_name_is_logged_once(
    bridge: RedisBridge, caplog: pytest.LogCaptureFixture
) -> None:
    reader = directory(bridge, "lonely", "mine.Callback")
    await reader.refresh()
    assert reader.is_python_callback("mine.Callback")  # local names count before any read
    with caplog.at_level(logging.ERROR, logger="patient_sidekiq.worker.callback_directory"):
        assert not reader.is_python_callback("app.callbacks.Missing")
        assert not reader.is_python_callback("app.callbacks.Missing")
        assert not reader.is_python_callback("Ruby::Missing")  # a Ruby name: the Ruby app's
    errors = [record.getMessage() for record in caplog.records]
    assert len(errors) == 1
    assert "'app.callbacks.Missing' looks like a Python callback" in errors[0]


async def test_run_publishes_at_start_and_withdraws_at_the_end(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    worker = directory(bridge, "short-lived", "a.B")
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        assert redis_client.smembers(keys.python_callbacks("short-lived")) == {b"a.B"}
        nursery.cancel_scope.cancel()
    assert not redis_client.exists(keys.python_callbacks("short-lived"))


async def test_redis_errors_keep_the_last_known_names(caplog: pytest.LogCaptureFixture) -> None:
    async with RedisBridge("redis://127.0.0.1:1/0") as unreachable:
        reader = CallbackDirectory(unreachable, "x", lambda: ["local.Name"], interval=0.01)
        with caplog.at_level(logging.WARNING), trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(reader.run)  # started despite Redis being down
                nursery.cancel_scope.cancel()
    assert reader.is_python_callback("local.Name")
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "Redis unavailable (callback directory refresh"
    ]
