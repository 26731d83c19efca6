"""drain: the stop's wait for running jobs, told at the start, every few seconds, at the end;
ended by the last job, the timeout, or a second stop signal. Trio's autojump clock runs the
waits in virtual time."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from patient_sidekiq.sidekiq.shutdown import drain


class Jobs:
    """A processor stand-in: ``busy`` jobs, ``finish()`` ends one."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self._idle = trio.Event()

    def finish(self) -> None:
        self.busy -= 1
        if not self.busy:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


async def test_all_finish_in_time(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    jobs = Jobs(3)

    async def finish_at(seconds: float) -> None:
        await trio.sleep(seconds)
        jobs.finish()

    async with trio.open_nursery() as nursery:
        for at in (2, 7, 12):
            nursery.start_soon(finish_at, at)
        await drain(jobs, trio.Event(), timeout=25, progress_interval=5, noun="requests")
        assert trio.current_time() == pytest.approx(12)
    assert lines(caplog) == [
        (logging.INFO, "stopping: waiting up to 25s for 3 running requests"),
        (logging.INFO, "waiting for 2 requests, 20s left"),
        (logging.INFO, "waiting for 1 request, 15s left"),
        (logging.INFO, "stopping: every running request finished"),
    ]


async def test_the_timeout_ends_the_wait(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await drain(Jobs(2), trio.Event(), timeout=12, progress_interval=5, noun="requests")
    assert trio.current_time() == pytest.approx(12)
    assert lines(caplog) == [
        (logging.INFO, "stopping: waiting up to 12s for 2 running requests"),
        (logging.INFO, "waiting for 2 requests, 7s left"),
        (logging.INFO, "waiting for 2 requests, 2s left"),
        (logging.WARNING, "shutdown timeout: requeueing 2 unfinished requests"),
    ]


async def test_a_second_signal_ends_the_wait_at_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    force = trio.Event()

    async def second_signal() -> None:
        await trio.sleep(7)
        force.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second_signal)
        await drain(Jobs(4), force, timeout=25, progress_interval=5, noun="callbacks")
        assert trio.current_time() == pytest.approx(7)
    assert lines(caplog) == [
        (logging.INFO, "stopping: waiting up to 25s for 4 running callbacks"),
        (logging.INFO, "waiting for 4 callbacks, 20s left"),
        (logging.WARNING, "forced stop: requeueing 4 unfinished callbacks"),
    ]


async def test_nothing_running_returns_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    force = trio.Event()
    force.set()  # even forced: there is nothing to requeue
    await drain(Jobs(0), force, timeout=25, progress_interval=5)
    assert lines(caplog) == [(logging.INFO, "stopping: no running jobs")]
