"""Pushing jobs the way ``Sidekiq::Client`` does (protocol spec §2), and requeueing at shutdown.

Redis keys touched: ``queues`` (SADD), ``queue:<name>`` (LPUSH; RPUSH when requeueing),
``schedule`` (ZADD).

Every immediate push stamps ``enqueued_at`` (and ``created_at`` when missing) in the
configured :class:`~patient_sidekiq.sidekiq.job.TimestampDialect`; zset scores are float seconds in
every Sidekiq version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from patient_sidekiq import keys
from patient_sidekiq.errors import InvalidJobError
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge, raise_first_error
from patient_sidekiq.ruby.rubyjson import ruby_float_repr
from patient_sidekiq.sidekiq.job import Job, TimestampDialect, stamp

__all__ = ["SidekiqClient", "push_raw_commands"]


def push_raw_commands(queue: str, raw: str | bytes) -> list[tuple[Arg, ...]]:
    """The commands of a Sidekiq push of ``raw`` (a job's exact text) onto ``queue``.

    For callers that push inside a larger MULTI or pipeline (a job moved unchanged, an
    enqueue with its stored payload).
    """
    return [("SADD", keys.QUEUES, queue), ("LPUSH", keys.queue(queue), raw)]


def _queue_of(job: Job) -> str:
    queue = job.queue
    if queue is None:
        # Sidekiq's client raises ArgumentError for the same reason.
        raise InvalidJobError("job must include a valid queue name")
    return queue


class SidekiqClient:
    """Pushes, schedules and requeues jobs on a Sidekiq Redis.

    ``dialect`` chooses how ``created_at``/``enqueued_at`` are written (7.x float seconds or
    8.x int milliseconds); ``clock`` returns epoch seconds and is injectable for tests.
    """

    def __init__(
        self,
        bridge: RedisBridge,
        *,
        dialect: TimestampDialect = TimestampDialect.SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use ``bridge`` (already entered) for every command."""
        self._bridge = bridge
        self._dialect = dialect
        self._clock = clock

    def _stamped(self, job: Job, now: float, *, enqueued: bool) -> Job:
        stamped = stamp(self._dialect, now)
        changes: dict[str, Any] = {}
        if "created_at" not in job:  # Ruby's ``||=``: preserved across retries and re-pushes
            changes["created_at"] = stamped
        if enqueued:
            changes["enqueued_at"] = stamped
        return job.with_fields(**changes)

    def timestamp(self) -> float | int:
        """Return "now" as this client writes ``created_at``/``enqueued_at``."""
        return stamp(self._dialect, self._clock())

    def push_commands(self, job: Job, *, stamped: bool = False) -> tuple[Job, list[Sequence[Arg]]]:
        """Return the job as it will be stored and the commands that push it now.

        For callers that must push inside a larger MULTI (the poller removes the job from
        its in-progress list in the same transaction). ``stamped``: the caller built the job
        with ``created_at``/``enqueued_at`` from :meth:`timestamp` already, so its text is
        pushed as is (a hot path saves serialising the job twice).
        """
        queue = _queue_of(job)
        pushed = job if stamped else self._stamped(job, self._clock(), enqueued=True)
        return pushed, list(push_raw_commands(queue, pushed.raw))

    async def push(self, job: Job) -> Job:
        """Enqueue ``job`` now: ``SADD queues`` + ``LPUSH queue:<q>`` in one pipeline.

        Returns the job as stored (with ``enqueued_at`` and, if missing, ``created_at``).
        """
        pushed, commands = self.push_commands(job)
        raise_first_error(await self._bridge.pipeline(commands))
        return pushed

    async def schedule(self, job: Job, at: float) -> Job:
        """Store ``job`` in ``schedule`` to run at epoch seconds ``at``.

        Like Sidekiq ≥ 7.2 the stored JSON has no ``at`` and no ``enqueued_at`` (the job has
        not been enqueued yet); ``created_at`` is set if missing. Returns the stored job.
        """
        _queue_of(job)
        scheduled = self._stamped(job.without("at", "enqueued_at"), self._clock(), enqueued=False)
        await self._bridge.execute("ZADD", keys.SCHEDULE, ruby_float_repr(float(at)), scheduled.raw)
        return scheduled

    async def push_bulk(self, jobs: Iterable[Job]) -> list[Job]:
        """Enqueue many jobs in one round trip, grouped by queue as Sidekiq 8.1 does.

        One ``SADD queues`` with every queue name, then one ``LPUSH`` per queue with that
        queue's jobs in the given order (so the first job is popped first). The whole batch
        shares one ``enqueued_at``. Returns the jobs as stored, in the given order.
        """
        now = self._clock()
        pushed = [self._stamped(job, now, enqueued=True) for job in jobs]
        if not pushed:
            return []
        by_queue: dict[str, list[str]] = {}
        for job in pushed:
            by_queue.setdefault(_queue_of(job), []).append(job.raw)
        commands: list[Sequence[Arg]] = [("SADD", keys.QUEUES, *by_queue)]
        commands.extend(
            ("LPUSH", keys.queue(queue), *payloads) for queue, payloads in by_queue.items()
        )
        raise_first_error(await self._bridge.pipeline(commands))
        return pushed

    async def requeue(self, raw_jobs_by_queue: Mapping[str, Sequence[str]]) -> None:
        """Put unfinished jobs back at the right end of their queues (shutdown, protocol spec §3).

        The raw strings go back unchanged (no new ``enqueued_at``), one ``RPUSH`` per queue,
        pipelined. Within a queue the LAST string given ends up rightmost, i.e. is popped
        first, exactly like Sidekiq's ``bulk_requeue``.
        """
        commands: list[Sequence[Arg]] = [
            ("RPUSH", keys.queue(queue), *raws) for queue, raws in raw_jobs_by_queue.items() if raws
        ]
        if commands:
            raise_first_error(await self._bridge.pipeline(commands))
