"""The stop's wait for running jobs, told as it goes: the launcher's shutdown timeout.

After ``TERM``/``INT`` the launcher has stopped fetching; :func:`drain` then waits up to
``timeout`` for the running jobs and logs

* at the start: ``stopping: waiting up to 25s for 3 running requests``;
* every ``progress_interval`` seconds while it waits: ``waiting for 2 requests, 15s left``;
* at the end, one of: ``stopping: every running request finished``, ``shutdown timeout:
  requeueing 2 unfinished requests`` or, when ``force`` was set (a second signal), ``forced
  stop: requeueing 2 unfinished requests``.

The requeue itself is the launcher's (cancelling the jobs puts each back on its queue); this
module only decides when to stop waiting. No Redis keys.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

__all__ = ["drain", "first_of"]

log = logging.getLogger(__name__)


class _Running(Protocol):
    @property
    def busy(self) -> int: ...

    async def wait_idle(self) -> None: ...


async def drain(
    processor: _Running,
    force: trio.Event,
    *,
    timeout: float,
    progress_interval: float,
    noun: str = "jobs",
) -> None:
    """Return once ``processor`` is idle, ``timeout`` passed or ``force`` is set (see above)."""
    running = processor.busy
    if not running:
        log.info("stopping: no running %s", noun)
        return
    log.info("stopping: waiting up to %.0fs for %s", timeout, _count(running, "running " + noun))
    deadline = trio.current_time() + timeout
    with trio.move_on_at(deadline):
        while processor.busy and not force.is_set():
            with trio.move_on_after(progress_interval) as pause:
                await first_of(processor.wait_idle, force.wait)
            if pause.cancelled_caught:
                left = max(0.0, deadline - trio.current_time())
                log.info("waiting for %s, %.0fs left", _count(processor.busy, noun), left)
    busy = processor.busy
    if not busy:
        log.info("stopping: every running %s finished", noun[:-1] if noun.endswith("s") else noun)
    elif force.is_set():
        log.warning("forced stop: requeueing %s", _count(busy, "unfinished " + noun))
    else:
        log.warning("shutdown timeout: requeueing %s", _count(busy, "unfinished " + noun))


def _count(number: int, words: str) -> str:
    """``3 running requests``, ``1 running request``."""
    return f"{number} {words[:-1] if number == 1 and words.endswith('s') else words}"


async def first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns; the others are cancelled."""
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)
