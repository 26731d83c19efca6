"""The launcher: one worker process's lifecycle (start, quiet, stop) and its signals.

Start: join the cluster (first heartbeat), recover dead processes' in-progress jobs, then
run the heartbeat, the scheduled poller, a periodic recovery pass and the processor.
Quiet (``TSTP`` from the OS or from the Web UI): stop fetching and polling; running jobs
finish. Stop (``TERM``/``INT``): quiet, wait up to ``shutdown_timeout`` for running jobs,
cancel what is left, put every job still in this process's in-progress lists back on its
queue, and leave the cluster; the wait is logged as it goes (``shutdown.py``). A second
``TERM``/``INT`` ends the wait at once: what still runs is cancelled and requeued as at the
timeout. ``TTIN`` logs the running jobs and the trio task tree. Redis failures of every loop
go to one :class:`~patient_sidekiq.redis_io.outage.RedisOutage` (given, or one per launcher).

Services (:class:`Service`, e.g. the RequestWorker's HTTP processor) start once the process
is in the cluster, register their handlers in the dispatcher, run their own loops beside the
heartbeat, and are stopped only after every job has ended, so a job never outlives what it
uses (an HTTP transport, the in-flight monitor).

Keys: through its parts (``heartbeat.py``, ``fetch.py``, ``scheduled.py``, ``processor.py``)
and its services.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import trio

from patient_sidekiq.errors import PatientSidekiqError
from patient_sidekiq.redis_io.outage import RedisOutage
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.redis_io.redis_target import RedisTarget
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.fetch import InTransit, ReliableFetch
from patient_sidekiq.sidekiq.heartbeat import BEAT_INTERVAL, Heartbeat, ProcessInfo, make_identity
from patient_sidekiq.sidekiq.job import TimestampDialect
from patient_sidekiq.sidekiq.metrics import ExecutionMetrics
from patient_sidekiq.sidekiq.processor import Dispatcher, Processor
from patient_sidekiq.sidekiq.retry import RetryPolicy
from patient_sidekiq.sidekiq.scheduled import Poller
from patient_sidekiq.sidekiq.shutdown import drain
from patient_sidekiq.sidekiq.unit_of_work import QueueOrder

__all__ = ["Launcher", "Runtime", "Service", "WorkerSettings"]

log = logging.getLogger(__name__)

RECOVERY_SLACK_SECONDS = 0.1
"""Past a heartbeat's expiry before the recovery pass that follows it."""
RECONCILE_POLL_SECONDS = 0.5
"""How often the reconcile loop looks for a lost reply."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything one worker process needs; defaults are Sidekiq's where Sidekiq has one."""

    redis_url: str | RedisTarget
    queues: Sequence[tuple[str, int]] = (("default", 0),)
    concurrency: int = 10
    shutdown_timeout: float = 25.0
    tag: str = ""
    labels: Sequence[str] = ()
    dialect: TimestampDialect = TimestampDialect.SECONDS
    backoff: Literal["7", "8"] = "7"
    max_retries: int = 25
    poll_interval_average: float | None = None
    heartbeat_interval: float = BEAT_INTERVAL
    recovery_interval: float = 30.0
    reconcile_interval: float = 30.0
    """Seconds between reconciles of this process's own records (besides the one after every
    Redis outage)."""
    handle_os_signals: bool = True
    identity: str = field(default_factory=make_identity)
    execution_metrics: bool = True
    """Write Sidekiq 7's per-minute execution metrics (the Web UI's Metrics tab)."""
    shutdown_progress_interval: float = 5.0
    """Seconds between two "waiting for N …" lines while a stop waits for running jobs."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a service gets from the launcher: the shared connection and the job machinery."""

    bridge: RedisBridge
    client: SidekiqClient
    dispatcher: Dispatcher
    policy: RetryPolicy
    identity: str
    clock: Callable[[], float]
    outage: RedisOutage = field(default_factory=RedisOutage)
    """Where the service's loops report Redis failures and successes."""


class Service(Protocol):
    """Something that runs beside the processor for the whole life of a worker process.

    A service may also have ``async def reconcile(self) -> int``: the launcher's reconcile
    pass calls it (after a lost reply, and periodically) to give back what the service's own
    records hold and it no longer runs (the RequestWorker's in-flight tasks).
    """

    async def serve(self, runtime: Runtime, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Register handlers, call ``task_status.started()``, then run until cancelled.

        Cancellation comes only after every job has ended; clean up (shielded) on the way out.
        """
        ...  # pragma: no cover


class Launcher:
    """Runs one worker process until stopped; :meth:`quiet` and :meth:`stop` may be called
    from any trio task (signals call them too)."""

    def __init__(
        self,
        settings: WorkerSettings,
        dispatcher: Dispatcher,
        *,
        services: Sequence[Service] = (),
        clock: Callable[[], float] = time.time,
        on_signal: Callable[[str], None] | None = None,
        outage: RedisOutage | None = None,
        noun: str = "jobs",
    ) -> None:
        self.settings = settings
        # Shared with the other launchers of the process, so an outage is logged once.
        self.outage = outage if outage is not None else RedisOutage()
        # What the shutdown lines call the running work ("requests" for the HTTP processor).
        self.noun = noun
        self._heartbeat_retry = self.outage.retry_delay("heartbeat")
        self._recovery_retry = self.outage.retry_delay("recovery pass")
        self._reconcile_retry = self.outage.retry_delay("reconcile pass")
        # Set when several launchers share one OS process: a signal (OS or from the Web UI)
        # must then reach all of them, so it goes to the owner instead of this launcher alone.
        self._on_signal = on_signal
        self.dispatcher = dispatcher
        self.services = tuple(services)
        self._clock = clock
        self._quiet = trio.Event()
        self._stop = trio.Event()
        self._force = trio.Event()
        self._processor: Processor | None = None

    @property
    def identity(self) -> str:
        """This process's Sidekiq identity."""
        return self.settings.identity

    @property
    def quieting(self) -> bool:
        """Whether the process stopped fetching."""
        return self._quiet.is_set()

    def quiet(self) -> None:
        """Stop fetching new jobs and polling; running jobs finish."""
        if not self._quiet.is_set():
            log.info("quieting: no new jobs will be fetched")
        self._quiet.set()

    def stop(self) -> None:
        """Shut down: quiet, then wait up to ``shutdown_timeout`` for running jobs."""
        self.quiet()
        self._stop.set()

    def force_stop(self) -> None:
        """Shut down now: what still runs is cancelled and requeued as at the timeout."""
        if not self._force.is_set():
            log.warning("stopping now: not waiting for running %s any longer", self.noun)
        self.stop()
        self._force.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped; ``task_status.started()`` once the process is in the cluster."""
        settings = self.settings
        policy = RetryPolicy(
            max_retries=settings.max_retries,
            dialect=settings.dialect,
            backoff=settings.backoff,
            clock=self._clock,
        )
        async with RedisBridge(settings.redis_url) as bridge:
            fetch = ReliableFetch(
                bridge,
                settings.redis_url,
                identity=settings.identity,
                queues=QueueOrder(settings.queues),
            )
            try:
                await self._run(bridge, fetch, policy, task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await fetch.close()

    async def _run(
        self, bridge: RedisBridge, fetch: ReliableFetch, policy: RetryPolicy, task_status: Any
    ) -> None:
        settings = self.settings
        info = ProcessInfo(
            identity=settings.identity,
            concurrency=settings.concurrency,
            queues=list(settings.queues),
            tag=settings.tag,
            labels=list(settings.labels),
        )
        metrics = ExecutionMetrics() if settings.execution_metrics else None
        heartbeat = Heartbeat(
            bridge,
            info,
            running=self._work_entries,
            quiet=lambda: self.quieting,
            metrics=metrics,
        )
        transit = InTransit()
        processor = Processor(
            bridge,
            fetch,
            self.dispatcher,
            concurrency=settings.concurrency,
            policy=policy,
            on_done=lambda processed, failed: heartbeat.count(processed=processed, failed=failed),
            on_executed=metrics.track if metrics is not None else None,
            clock=self._clock,
            transit=transit,
            outage=self.outage,
        )
        self._processor = processor
        client = SidekiqClient(bridge, dialect=settings.dialect, clock=self._clock)
        poller = Poller(
            bridge,
            client,
            identity=settings.identity,
            policy=policy,
            poll_interval_average=settings.poll_interval_average,
            clock=self._clock,
            transit=transit,
            outage=self.outage,
        )
        async with trio.open_nursery() as system:
            if settings.handle_os_signals:
                # Catch signals before the first beat makes the process visible: a TSTP
                # sent as soon as it shows up must quiet it, not stop it (SIGTSTP's default).
                await system.start(self._os_signals)
            # Beat before recovering, so no other process mistakes our lists for a dead one's.
            await self._beat(heartbeat)
            await self._recover(fetch)
            log.info(
                "patient-sidekiq %s started%s: queues %s, concurrency %d",
                settings.identity,
                f" ({', '.join(settings.labels)})" if settings.labels else "",
                ", ".join(name for name, _ in settings.queues),
                settings.concurrency,
            )
            system.start_soon(self._heartbeat_loop, heartbeat)
            system.start_soon(self._recovery_loop, fetch)
            system.start_soon(self._until_quiet, poller.run)
            runtime = Runtime(
                bridge, client, self.dispatcher, policy, settings.identity, self._clock, self.outage
            )
            for service in self.services:
                await system.start(service.serve, runtime)
            system.start_soon(self._reconcile_loop, bridge, fetch, processor, transit)
            task_status.started()
            async with trio.open_nursery() as jobs:
                await self._until_quiet(processor.fetch_loop, jobs)
                await self._stop.wait()
                await drain(
                    processor,
                    self._force,
                    timeout=settings.shutdown_timeout,
                    progress_interval=settings.shutdown_progress_interval,
                    noun=self.noun,
                )
                jobs.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await self._leave(fetch, heartbeat)
            system.cancel_scope.cancel()
        log.info("patient-sidekiq %s stopped", settings.identity)

    async def _until_quiet(self, function: Callable[..., Any], *args: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(function, *args)
            await self._quiet.wait()
            nursery.cancel_scope.cancel()

    async def _leave(self, fetch: ReliableFetch, heartbeat: Heartbeat) -> None:
        try:
            moved = await fetch.release_own()
            if moved:
                log.info("put %d unfinished jobs back on their queues", moved)
        except PatientSidekiqError as exc:
            log.error("could not requeue unfinished jobs (they are recovered later): %s", exc)  # noqa: TRY400
        try:
            await heartbeat.clear()
        except PatientSidekiqError as exc:
            log.warning("could not clear the heartbeat: %s", exc)

    def _work_entries(self) -> Any:
        return self._processor.work_entries() if self._processor else {}

    async def _beat(self, heartbeat: Heartbeat) -> None:
        # Paced by the heartbeat interval, never backed off: a process whose beat lapses
        # past its TTL would have its in-progress jobs recovered by others.
        try:
            remote = await heartbeat.beat()
        except PatientSidekiqError as exc:
            self._heartbeat_retry.failed(exc)
            return
        self._heartbeat_retry.succeeded()
        if remote is not None:
            self._signal(remote)

    async def _heartbeat_loop(self, heartbeat: Heartbeat) -> None:
        # Becoming quiet triggers one extra beat, so the Busy page shows the process quiet
        # right away instead of up to an interval later.
        quiet_shown = False
        while True:
            with trio.move_on_after(self.settings.heartbeat_interval):
                if quiet_shown:
                    await trio.sleep_forever()
                await self._quiet.wait()
            quiet_shown = self._quiet.is_set()
            await self._beat(heartbeat)

    async def _recover(self, fetch: ReliableFetch) -> None:
        try:
            moved = await fetch.recover()
        except PatientSidekiqError as exc:
            self._recovery_retry.failed(exc)
            return
        self._recovery_retry.succeeded()
        if moved:
            log.warning("recovered %d jobs of dead processes", moved)

    async def _recovery_loop(self, fetch: ReliableFetch) -> None:
        while True:
            # A pass right after the first other owner's heartbeat hash expires (a killed
            # process's lists come back ~60 s after its last beat, not up to 30 s later).
            wait = self.settings.recovery_interval
            if fetch.next_expiry is not None:
                wait = min(wait, fetch.next_expiry + RECOVERY_SLACK_SECONDS)
            await trio.sleep(wait)
            await self._recover(fetch)

    async def _reconcile_loop(
        self, bridge: RedisBridge, fetch: ReliableFetch, processor: Processor, transit: InTransit
    ) -> None:
        """Reconcile this process's own records every ``reconcile_interval`` and, above all,
        as soon as Redis answers again after a lost reply (the bridge or the blocking fetch
        failed with the outcome unknown).

        Nobody else recovers what a LIVE process left behind, so without this a job whose
        pop, acknowledgement or hand-off reply was lost would wait for this process's restart.
        """

        def lost() -> int:
            return bridge.failures + fetch.lost_moves

        seen = 0  # a reply lost while the process started counts too
        while True:
            with trio.move_on_after(self.settings.reconcile_interval):
                while lost() == seen:  # a counter read, no Redis traffic
                    await trio.sleep(RECONCILE_POLL_SECONDS)
            if lost() != seen:
                await self._until_redis_answers(bridge)
            # Read before the pass: a failure during it triggers another pass.
            seen = lost()
            await self._reconcile(fetch, processor, transit)

    async def _until_redis_answers(self, bridge: RedisBridge) -> None:
        retry = self._reconcile_retry
        while True:
            try:
                await bridge.execute("PING")
            except PatientSidekiqError as exc:
                await retry.wait(retry.failed(exc))
            else:
                retry.succeeded()
                return

    async def _reconcile(
        self, fetch: ReliableFetch, processor: Processor, transit: InTransit
    ) -> None:
        try:
            moved = await fetch.reconcile_own(processor.held, transit)
            if moved:
                log.warning("reconcile: put %d jobs this process no longer held back", moved)
            for service in self.services:
                reconcile = getattr(service, "reconcile", None)
                if reconcile is not None:
                    requeued = await reconcile()
                    if requeued:
                        log.warning("reconcile: re-enqueued %d requests no longer run", requeued)
        except PatientSidekiqError as exc:
            # Retried after the next outage or interval.
            self._reconcile_retry.failed(exc)
        else:
            self._reconcile_retry.succeeded()

    async def _os_signals(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        names = {
            signal.SIGTERM: "TERM",
            signal.SIGINT: "INT",
            signal.SIGTSTP: "TSTP",
            signal.SIGTTIN: "TTIN",
        }
        with trio.open_signal_receiver(*names) as signals:
            task_status.started()
            async for number in signals:
                self._signal(names[signal.Signals(number)])

    def _signal(self, name: str) -> None:
        if self._on_signal is not None:
            self._on_signal(name)
        else:
            self.handle_signal(name)

    def handle_signal(self, name: str) -> None:
        """Act on a Sidekiq signal name: TSTP quiets, TERM/INT stop, TTIN dumps the running jobs."""
        log.info("received %s", name)
        if name == "TSTP":
            self.quiet()
        elif name in ("TERM", "INT"):
            if self._stop.is_set():  # a second one: Sidekiq's and Celery's "now"
                self.force_stop()
            else:
                self.stop()
        elif name == "TTIN":
            self._dump()

    def _dump(self) -> None:
        lines = self._processor.describe_running() if self._processor else []
        log.warning("TTIN: %d running jobs%s", len(lines), "".join(f"\n  {line}" for line in lines))
        root = trio.lowlevel.current_root_task()
        if root is not None:
            log.warning("TTIN: trio tasks:\n%s", "\n".join(_task_tree(root)))


def _task_tree(task: trio.lowlevel.Task, depth: int = 0) -> list[str]:
    lines = [f"{'  ' * depth}{task.name}"]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            lines += _task_tree(child, depth + 1)
    return lines
