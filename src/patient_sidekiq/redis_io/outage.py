"""One process's view of a Redis outage: its log lines and every loop's retry delays.

A worker has several loops talking to Redis (the fetch, the heartbeat, the scheduled poller,
the in-flight heartbeat and orphan sweep, the callback directory, the reconcile pass). When
Redis goes away they all fail at once and keep failing, so each logging its own warning per
attempt floods the log with lines that say nothing new. They report to one
:class:`RedisOutage` instead, each through its own :class:`RetryDelay`:

* the first failure of an outage logs ONE warning, ``Redis unavailable (<loop>: <error>):
  retrying``; later failures are counted and logged again only after 1, 2, 4 … 30 s
  (``Redis still unavailable after X s (N failed attempts; <loop>: <error>)``);
* the first success after an outage logs ONE info line, ``Redis reconnected after X s``;
* each loop waits longer between attempts, doubling from ``first_delay`` up to ``max_delay``,
  with jitter so the loops (and the processes of a fleet) do not knock on Redis in step;
  :meth:`RetryDelay.wait` ends early when another loop got through, so a loop backed off to
  30 s does not keep the worker idle that long after Redis is back.

Only :class:`~patient_sidekiq.errors.RedisUnavailableError` (no connection, a connection
broken mid-command) counts as an outage. Anything else Redis answers (an error reply, a
script failing) is the loop's own problem: it is logged as a warning each time it happens,
with the loop's delay backing off likewise.

Touches no Redis keys: callers report what their own commands did.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Final

import trio

from patient_sidekiq.errors import RedisUnavailableError

__all__ = ["FIRST_DELAY", "MAX_DELAY", "RedisOutage", "RetryDelay"]

log = logging.getLogger(__name__)

FIRST_DELAY: Final = 1.0
"""Seconds before a loop's first retry, and before the first repeated outage line."""
MAX_DELAY: Final = 30.0
"""The longest wait between a loop's retries, and between two outage lines."""
JITTER: Final = 0.2
"""Each delay is drawn from ±20 % around its nominal value (capped at ``max_delay``)."""


class RedisOutage:
    """Shared by every loop of one process talking to one Redis (see the module docstring).

    ``clock`` is monotonic seconds; ``rng`` draws the jitter. Both are injectable for tests.
    """

    def __init__(
        self,
        *,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._log = logger
        self._since: float | None = None  # start of the outage in progress
        self._attempts = 0
        self._next_report = 0.0
        self._report_gap = first_delay
        self._recovered = trio.Event()
        self._recoveries = 0  # outages ended so far: tells a loop its outage is over

    @property
    def down(self) -> bool:
        """Whether an outage is in progress (a failure not yet followed by a success)."""
        return self._since is not None

    @property
    def attempts(self) -> int:
        """Failed attempts (of every loop) since the outage in progress began; 0 without one."""
        return self._attempts

    def retry_delay(self, loop: str) -> RetryDelay:
        """A new loop's handle: it reports through this outage and keeps its own delay."""
        return RetryDelay(self, loop)

    def failed(self, loop: str, error: BaseException) -> None:
        """Record a failure of ``loop``; log it when it starts an outage or a report is due."""
        if not isinstance(error, RedisUnavailableError):
            self._log.warning("%s failed: %s", loop, error)
            return
        now = self._clock()
        self._attempts += 1
        if self._since is None:
            self._since = now
            self._recovered = trio.Event()
            self._report_gap = self.first_delay
            self._next_report = now + self._report_gap
            self._log.warning("Redis unavailable (%s: %s): retrying", loop, error)
            return
        if now >= self._next_report:
            self._log.warning(
                "Redis still unavailable after %.0f s (%d failed attempts; %s: %s)",
                now - self._since,
                self._attempts,
                loop,
                error,
            )
            self._report_gap = min(self._report_gap * 2, self.max_delay)
            self._next_report = now + self._report_gap

    def succeeded(self) -> None:
        """Record a success; the first one after an outage logs the reconnection."""
        if self._since is None:
            return
        self._log.info(
            "Redis reconnected after %.1f s (%d failed attempts)",
            self._clock() - self._since,
            self._attempts,
        )
        self._since = None
        self._attempts = 0
        self._recoveries += 1
        self._recovered.set()

    @property
    def recoveries(self) -> int:
        """How many outages have ended so far."""
        return self._recoveries

    async def pause(self, seconds: float, *, since: int | None = None) -> None:
        """Sleep ``seconds``, or less if an outage in progress ends meanwhile.

        ``since``: the :attr:`recoveries` count when the caller failed; if an outage has
        ended since then (another loop got through first), return at once.
        """
        if since is not None and since != self._recoveries:
            await trio.lowlevel.checkpoint()
            return
        if self._since is None:
            await trio.sleep(seconds)
            return
        with trio.move_on_after(seconds):
            await self._recovered.wait()

    def jittered(self, nominal: float) -> float:
        """``nominal`` ± :data:`JITTER`, at most ``max_delay``."""
        spread = 1.0 + JITTER * (2.0 * self._rng.random() - 1.0)
        return min(self.max_delay, nominal * spread)


class RetryDelay:
    """One loop's failures in a row, and how long it waits before its next attempt."""

    def __init__(self, outage: RedisOutage, loop: str) -> None:
        self.outage = outage
        self.loop = loop
        self.failures = 0
        self._since: int | None = None  # outage.recoveries at the last outage failure

    def failed(self, error: BaseException) -> float:
        """Report ``error``; return the seconds to wait before trying again.

        ``first_delay`` after the first failure in a row, doubling after each further one,
        up to ``max_delay``, with jitter.
        """
        self.outage.failed(self.loop, error)
        self.failures += 1
        unavailable = isinstance(error, RedisUnavailableError)
        self._since = self.outage.recoveries if unavailable else None
        nominal = self.outage.first_delay * 2.0 ** min(self.failures - 1, 30)
        return self.outage.jittered(min(nominal, self.outage.max_delay))

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if an outage in progress ends meanwhile."""
        await self.outage.pause(seconds, since=self._since)

    def succeeded(self) -> None:
        """Report a success: the delay starts over, and an outage in progress ends."""
        self.failures = 0
        self.outage.succeeded()
