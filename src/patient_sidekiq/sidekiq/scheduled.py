"""The scheduled/retry poller: moves due jobs from ``retry`` and ``schedule`` onto their queues.

Works like Sidekiq's ``Scheduled::Poller`` (protocol spec §5), beside Ruby pollers on the
same Redis: one job per atomic Lua pop (ZREM decides which process gets a job), the job
re-pushed verbatim apart from a fresh ``enqueued_at``, and a random poll interval scaled by
the number of processes so the whole cluster checks about every 5 seconds.

One thing is better than Sidekiq: Sidekiq pops a job and then pushes it, so a crash in
between loses that job. Our pop parks the job in this process's in-progress list in the
same atomic step, and the push removes it from there in one MULTI; after a crash the
reliable-fetch recovery (``fetch.py``) puts it on its queue.

Keys: ``retry``, ``schedule`` (ZRANGE BYSCORE + ZREM), ``processes`` (SCARD),
``queues``/``queue:<name>`` (push), the in-progress lists and their registry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import InvalidJobError, PatientSidekiqError
from patient_sidekiq.redis_io.lua import LuaScript
from patient_sidekiq.redis_io.outage import RedisOutage
from patient_sidekiq.redis_io.redis_bridge import RedisBridge, raise_first_error
from patient_sidekiq.ruby.rubyjson import ruby_float_repr
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.fetch import InTransit
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.poison import CONTENT_ERRORS, content_error
from patient_sidekiq.sidekiq.retry import RetryPolicy
from patient_sidekiq.sidekiq.unit_of_work import UnitOfWork

__all__ = ["AVERAGE_POLL_INTERVAL", "Poller"]

AVERAGE_POLL_INTERVAL: Final = 5.0
"""Seconds between checks across the whole cluster (Sidekiq's default)."""
INITIAL_WAIT: Final = 10.0

log = logging.getLogger(__name__)


class Poller:
    """Enqueues due retries and scheduled jobs; runs until cancelled.

    ``poll_interval_average`` fixes this process's average interval (Sidekiq's option of
    the same name); without it the average is ``SCARD processes * 5 s``.
    """

    def __init__(
        self,
        bridge: RedisBridge,
        client: SidekiqClient,
        *,
        identity: str,
        policy: RetryPolicy,
        poll_interval_average: float | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        transit: InTransit | None = None,
        outage: RedisOutage | None = None,
    ) -> None:
        self._bridge = bridge
        self._retry = (outage if outage is not None else RedisOutage()).retry_delay(
            "scheduled poller"
        )
        # Each park-then-push is one in-transit step: a reconcile of our in-progress lists
        # must not give back a job parked a moment ago that this round is about to push.
        self._transit = transit if transit is not None else InTransit()
        self._client = client
        self._identity = identity
        self._policy = policy
        self._average = poll_interval_average
        self._rng = rng or random.Random()
        self._clock = clock
        self._pop = LuaScript("scheduled_pop.lua", __package__)

    async def enqueue_due(self) -> int:
        """Move every job that is due now; return how many were enqueued."""
        moved = 0
        for sorted_set in (keys.RETRY, keys.SCHEDULE):
            while True:
                with self._transit.step():
                    reply = await self._pop.run(
                        self._bridge,
                        [sorted_set, keys.INPROGRESS_REGISTRY],
                        [
                            ruby_float_repr(self._clock()),
                            self._identity,
                            keys.inprogress(self._identity, ""),
                        ],
                    )
                    if reply is None:
                        break
                    raw = reply[0].decode("utf-8", "surrogateescape")
                    moved += await self._push(raw, reply[1].decode("utf-8", "surrogateescape"))
        return moved

    async def _push(self, raw: str, queue: str) -> int:
        # The parked job ends through its unit (the exact bytes popped), pushed or buried:
        # a member that cannot be re-pushed goes to dead instead of stopping every later poll.
        unit = UnitOfWork(queue, raw, keys.inprogress(self._identity, queue))
        try:
            job = Job.parse(raw)
            if job.queue is None:
                job = job.with_fields(queue=queue)
            _stored, commands = self._client.push_commands(job)
        except InvalidJobError as exc:
            log.error("burying a scheduled member that is not a valid job (%s): %.200s", exc, raw)  # noqa: TRY400
            dead = unit.dead_commands(exc.ruby_error_class, str(exc), self._policy)
            raise_first_error(await self._bridge.transaction(dead))
            return 0
        except CONTENT_ERRORS as exc:
            log.error("burying a scheduled job that cannot be re-pushed (%s): %.200s", exc, raw)  # noqa: TRY400
            dead = unit.dead_commands(*content_error(exc), self._policy)
            raise_first_error(await self._bridge.transaction(dead))
            return 0
        raise_first_error(await self._bridge.transaction([*commands, unit.acknowledge_command()]))
        return 1

    async def random_interval(self) -> float:
        """Seconds until the next check, scaled by the cluster size like Sidekiq 8."""
        if self._average is not None:
            interval = self._average
            count = 1
        else:
            count = max(1, int(await self._bridge.execute("SCARD", keys.PROCESSES)))
            interval = count * AVERAGE_POLL_INTERVAL
        if count < 10:
            return interval * self._rng.random() + interval / 2
        # With many processes, spread the checks over [0, 2x) so they do not align.
        return interval * 2 * self._rng.random()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled. Redis errors are reported to the outage and retried after
        the longer of the poll interval and the outage's delay."""
        task_status.started()
        if self._average is None:
            await trio.sleep(INITIAL_WAIT + self._rng.random() * 5)
        while True:
            try:
                moved = await self.enqueue_due()
                if moved:
                    log.debug("poller enqueued %d jobs", moved)
                interval = await self.random_interval()
            except PatientSidekiqError as exc:
                interval = max(AVERAGE_POLL_INTERVAL, self._retry.failed(exc))
                await self._retry.wait(interval)
            else:
                self._retry.succeeded()
                await trio.sleep(interval)
