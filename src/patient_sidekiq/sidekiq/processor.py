"""Runs fetched jobs: dispatch by class name, then acknowledge, retry or bury each one.

Every unit of work ends exactly one way:

* the handler returned → acknowledged (removed from the in-progress list);
* the handler raised, or no handler exists for the class → filed into ``retry`` or ``dead``
  by Sidekiq's rules **in the same MULTI** as the acknowledgement;
* the text is not a job (bad JSON, no class, args not a list) → the raw text goes to
  ``dead`` in the same MULTI as the acknowledgement, as Sidekiq's processor does;
* the run was cancelled by a hard shutdown → left in the in-progress list, from where the
  launcher puts it back on its queue (``ReliableFetch.release_own``);
* the handler handed the job off (:meth:`Work.hand_off`: its own MULTI removed the job from
  the in-progress list and recorded it elsewhere, as the RequestWorker handler does with
  the gem's in-flight keys) → from then on the handler alone ends it; nothing is filed.

A unit is marked finished before its acknowledgement is sent, and the acknowledgement is
shielded from cancellation, so a job is never both completed and requeued by one process.

A class may also have an ``on_exhausted(job, error)`` callback: Sidekiq's
``sidekiq_retries_exhausted``. It runs once the job's last failure is filed (into ``dead``,
or discarded by ``dead: false``; never for ``retry: false``, as in Sidekiq's JobRetry), after
that MULTI succeeded, so a job whose filing did not land (and runs again) is not reported
twice. Its failures are logged, never raised.

Keys: the in-progress lists (LREM), ``retry``, ``dead`` (through ``retry.py``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from patient_sidekiq.errors import InvalidJobError, PatientSidekiqError
from patient_sidekiq.redis_io.outage import RedisOutage
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge, raise_first_error
from patient_sidekiq.sidekiq.fetch import Holdings, InTransit, ReliableFetch
from patient_sidekiq.sidekiq.heartbeat import WorkEntry
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.poison import dead_entry_commands, filing_commands
from patient_sidekiq.sidekiq.retry import RetryPolicy
from patient_sidekiq.sidekiq.unit_of_work import UnitOfWork

__all__ = ["Dispatcher", "ExhaustedCallback", "Handler", "Processor", "Work"]


@dataclass(eq=False, slots=True)
class Work:
    """What a handler gets besides its job: where the job came from, and the hand-off switch."""

    unit: UnitOfWork
    handed_off: bool = False
    context: dict[str, str] | None = None
    """What the handler knows that the failure line should name (``callback``,
    ``request_id`` …), in the order to log it."""
    default_backtrace: bool | int | None = None
    """The ``backtrace`` option a failure of this job is filed with when the job has none
    (the handler sets it once it runs the app's own code)."""

    def acknowledge_command(self) -> tuple[Arg, ...]:
        """The command removing this job from its in-progress list (for the handler's MULTI)."""
        return self.unit.acknowledge_command()

    def hand_off(self) -> None:
        """Record that the handler's own MULTI ran :meth:`acknowledge_command`.

        Call it only once that MULTI succeeded. The processor then neither acknowledges nor
        files the job: another record (and its recovery) owns it.
        """
        self.handed_off = True


Handler = Callable[[Job, Work], Awaitable[None]]
"""An async callable that performs one job; raising (before a hand-off) files it for retry."""

ExhaustedCallback = Callable[[Job, BaseException], Awaitable[None]]
"""Called with the job as filed (error fields set) and the error of its last attempt."""

log = logging.getLogger(__name__)
WAIT_SECONDS = 1.0  # longest blocking wait for work, so quiet is noticed promptly


class Dispatcher:
    """Maps job class names (``PatientHttp::Sidekiq::RequestWorker``) to handlers."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._exhausted: dict[str, ExhaustedCallback] = {}

    def register(
        self,
        class_name: str,
        handler: Handler,
        *,
        on_exhausted: ExhaustedCallback | None = None,
    ) -> None:
        """Route jobs of ``class_name`` to ``handler``.

        ``on_exhausted(job, error)`` runs when such a job has used up its retries (see the
        module docstring); registering again without it removes an earlier one.
        """
        self._handlers[class_name] = handler
        if on_exhausted is None:
            self._exhausted.pop(class_name, None)
        else:
            self._exhausted[class_name] = on_exhausted

    def get(self, class_name: str) -> Handler | None:
        """Return the handler for ``class_name``, or None."""
        return self._handlers.get(class_name)

    def exhausted_callback(self, class_name: str) -> ExhaustedCallback | None:
        """Return the ``on_exhausted`` callback of ``class_name``, or None."""
        return self._exhausted.get(class_name)


@dataclass(eq=False, slots=True)
class _Running:
    work: Work
    started_at: float
    finished: bool = False
    job: Job | None = field(default=None)
    # Set when the job's retries ran out: what to call once its filing has landed.
    exhausted: tuple[ExhaustedCallback, Job, BaseException] | None = None

    @property
    def unit(self) -> UnitOfWork:
        return self.work.unit


class Processor:
    """Fetches up to free capacity and runs each job in its own task.

    ``on_done(processed, failed)`` is told of every finished job (the heartbeat counts them);
    ``on_executed(class_name, elapsed_ms, failed=…)`` of every job a handler ran (metrics).
    """

    def __init__(
        self,
        bridge: RedisBridge,
        fetch: ReliableFetch,
        dispatcher: Dispatcher,
        *,
        concurrency: int,
        policy: RetryPolicy,
        on_done: Callable[[int, int], None] = lambda processed, failed: None,
        on_executed: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.time,
        transit: InTransit | None = None,
        outage: RedisOutage | None = None,
    ) -> None:
        self._bridge = bridge
        self._fetch_retry = (outage if outage is not None else RedisOutage()).retry_delay("fetch")
        self._transit = transit if transit is not None else InTransit()
        self._fetch = fetch
        self._dispatcher = dispatcher
        self._concurrency = concurrency
        self._policy = policy
        self._on_done = on_done
        self._on_executed = on_executed
        self._clock = clock
        self._running: dict[str, _Running] = {}
        self._slot_freed = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._next_id = 0

    @property
    def busy(self) -> int:
        """Jobs running now."""
        return len(self._running)

    def held(self) -> Holdings:
        """The jobs this processor holds in its in-progress lists, by list and exact bytes.

        A unit counts from its start until its acknowledgement's reply has come back (it
        leaves ``_running`` only then), unless handed off (another record owns it now).
        """
        return Counter(
            (r.unit.inprogress_key, r.unit.raw_bytes)
            for r in self._running.values()
            if not r.work.handed_off
        )

    def work_entries(self) -> dict[str, WorkEntry]:
        """The running jobs as the heartbeat lists them for the Busy page."""
        return {
            wid: WorkEntry(r.unit.queue, r.unit.raw, int(r.started_at))
            for wid, r in self._running.items()
        }

    def describe_running(self) -> list[str]:
        """One line per running job (for the TTIN dump)."""
        now = self._clock()
        return [
            f"{wid} {r.job.class_name if r.job else '?'} jid={r.job.jid if r.job else '?'} "
            f"queue={r.unit.queue} running {now - r.started_at:.1f}s"
            for wid, r in self._running.items()
        ]

    async def wait_idle(self) -> None:
        """Return once no job is running."""
        while self._running:
            await self._idle.wait()

    async def fetch_loop(self, jobs: trio.Nursery) -> None:
        """Fetch and start jobs in ``jobs`` until cancelled (quiet cancels it).

        A failed fetch is retried after the outage's growing delay (``redis_io.outage``).
        """
        retry = self._fetch_retry
        delay = 0.0
        while True:
            free = self._concurrency - len(self._running)
            if free <= 0:
                self._slot_freed = trio.Event()
                await self._slot_freed.wait()
                continue
            # One in-transit step from the pop to the jobs being held (InTransit): a reconcile
            # must not give back what a pop in flight is about to start.
            with self._transit.step():
                try:
                    units = await self._fetch.fetch(free)
                    if not units:
                        unit = await self._fetch.wait_for_work(WAIT_SECONDS)
                        units = [unit] if unit is not None else []
                except PatientSidekiqError as exc:
                    delay = retry.failed(exc)
                    units = None
                else:
                    retry.succeeded()
                    for unit in units:
                        self._start(jobs, unit)
            if units is None:
                await retry.wait(delay)

    def _start(self, jobs: trio.Nursery, unit: UnitOfWork) -> None:
        self._next_id += 1
        wid = f"{self._next_id:x}"
        running = _Running(Work(unit), self._clock())
        self._running[wid] = running
        if self._idle.is_set():  # busy again: a new event for wait_idle (not one per job)
            self._idle = trio.Event()
        jobs.start_soon(self._perform, wid, running)

    async def _perform(self, wid: str, running: _Running) -> None:
        unit = running.unit
        try:
            commands = await self._run(running)
            # From here on the job counts as done; a hard shutdown must not requeue it.
            running.finished = True
            if not running.work.handed_off:
                with trio.CancelScope(shield=True):
                    acknowledged = await self._acknowledge(unit, commands)
                if acknowledged and running.exhausted is not None:
                    await self._retries_exhausted(*running.exhausted)
        finally:
            del self._running[wid]
            self._slot_freed.set()
            if not self._running:
                self._idle.set()

    def _executed(self, job: Job, started: float, *, failed: bool) -> None:
        """Tell ``on_executed`` (Sidekiq 7's metrics) of a job its handler ran."""
        if self._on_executed is not None:
            # Named by the class we dispatched on, not the job's own "wrapped" (Sidekiq's
            # ActiveJob naming): no job we handle is wrapped, and a hostile one must not name
            # Redis keys after an arbitrary string.
            elapsed_ms = int((time.monotonic() - started) * 1000)
            self._on_executed(job.class_name, elapsed_ms, failed=failed)

    async def _run(self, running: _Running) -> list[tuple[Any, ...]]:
        """Run the job; return the commands to send with its acknowledgement."""
        unit = running.unit
        try:
            job = Job.parse(unit.raw)
        except InvalidJobError as exc:
            # %.200s: hostile text must not turn into megabyte log lines.
            log.error("job in queue %s is not valid (%.200s); moved to dead", unit.queue, exc)  # noqa: TRY400
            # With the Ruby error as Sidekiq names it; the original text is kept (poison.py).
            return dead_entry_commands(
                unit.raw, exc.ruby_error_class, str(exc), queue=unit.queue, policy=self._policy
            )
        running.job = job
        handler = self._dispatcher.get(job.class_name)
        error: BaseException | tuple[str, str, list[str]]
        if handler is None:
            # What a Ruby process raises for a class it cannot resolve, naming where it came from.
            error = (
                "NameError",
                f"uninitialized constant {job.class_name} "
                f"(no handler for it in patient-sidekiq; fetched from queue {unit.queue})",
                [],
            )
            log.error(
                "no handler for %.200s (queue %s, jid %.40s)", job.class_name, unit.queue, job.jid
            )
        else:
            started = time.monotonic()
            try:
                await handler(job, running.work)
            except Exception as exc:  # the handler's failure is the job's failure
                self._executed(job, started, failed=True)
                if running.work.handed_off:
                    # Another record owns the job now; filing it too would run it twice.
                    log.exception(
                        "%.200s jid=%.40s failed after its hand-off", job.class_name, job.jid
                    )
                    self._on_done(1, 1)
                    return []
                # ERROR with the exception attached: logging integrations (Sentry's …) see it.
                log.exception(
                    "%.200s jid=%.40s%s failed: %s: %.300s",
                    job.class_name,
                    job.jid,
                    _context(running.work.context),
                    type(exc).__name__,
                    exc,  # noqa: TRY401 (the line alone must say what failed, e.g. in JSON logs)
                )
                error = exc
            else:
                self._executed(job, started, failed=False)
                self._on_done(1, 0)
                return []
        # A job whose content cannot be written back goes to dead by the poison rule instead
        # of raising here (which used to end the whole worker).
        outcome, commands = filing_commands(
            job,
            error,
            raw=unit.raw,
            queue=unit.queue,
            policy=self._policy,
            default_backtrace=running.work.default_backtrace,
        )
        self._on_done(1, 1)
        # Sidekiq calls retries_exhausted for a death and for a ``dead: false`` discard, but a
        # ``retry: false`` job (filed unchanged) never reaches the retry bookkeeping.
        # A job sent to dead by the poison rule (outcome None) died too: its callback gets
        # the job as parsed (the filed text could not be written as a job).
        died = (
            job.retry is not False
            if outcome is None
            else outcome.kind == "dead"
            or (outcome.kind == "discard" and outcome.job.retry is not False)
        )
        if isinstance(error, BaseException) and died:
            callback = self._dispatcher.exhausted_callback(job.class_name)
            if callback is not None:
                running.exhausted = (callback, outcome.job if outcome else job, error)
        return commands

    async def _acknowledge(self, unit: UnitOfWork, commands: list[tuple[Any, ...]]) -> bool:
        ack = unit.acknowledge_command()  # the fetched bytes, whatever they hold
        try:
            if commands:
                raise_first_error(await self._bridge.transaction([*commands, ack]))
            else:
                await self._bridge.execute(*ack)
        except PatientSidekiqError as exc:
            # The job stays in our in-progress list and runs again after recovery: at least
            # once, never zero.
            log.error("could not acknowledge a job from %s: %s", unit.queue, exc)  # noqa: TRY400
            return False
        return True

    async def _retries_exhausted(
        self, callback: ExhaustedCallback, job: Job, error: BaseException
    ) -> None:
        # Not shielded: it may run user code, and a hard shutdown cancels it as Sidekiq kills
        # a job's thread. The job itself is already filed.
        try:
            await callback(job, error)
        except Exception:
            log.exception(
                "retries-exhausted callback of %.200s jid=%.40s failed", job.class_name, job.jid
            )


def _context(context: dict[str, str] | None) -> str:
    # %.200s per value: they may come from the job, and a hostile one must stay one line.
    return "".join(f" {key}={value:.200s}" for key, value in (context or {}).items())
