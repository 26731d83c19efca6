"""The HTTP processor: runs ``PatientHttp::Sidekiq::RequestWorker`` jobs (wire spec §1-§4, §7-§9).

The path of one job (the processor fetched it into this process's in-progress list and
calls :meth:`RequestWorker.perform`):

1. **Check** the five args (:class:`RequestCall`), unwrap ``args[0]`` (stored payload →
   decrypt, ``packing.unpack``) and load the request. Anything wrong raises, and the
   processor files the job into ``retry``/``dead`` exactly as a Ruby Sidekiq would.
2. **Capacity**: with ``max_connections`` requests already in flight the job fails with
   ``PatientHttp::MaxCapacityError`` (counted as ``max_capacity_exceeded``). The processor
   only fetches up to its free capacity, so this happens only when it is configured with
   more slots than ``max_connections``.
3. **Hand-off**: ONE atomic step (``inflight_hand_off.lua``) removes the job from the
   in-progress list and records it in the gem's in-flight keys under
   ``<process id>/<request id>``. From then on exactly one
   mechanism can recover it: the gem's orphan sweep (Ruby's or ours).
4. **Execute** over the shared :class:`~patient_sidekiq.http.http_transport.ShardedTransport`
   (``http_client.execute``): a Response, RequestError, HttpError or redirect error.
5. **Deliver**: pack the result (encrypt, store when large), then ONE Lua step
   (``inflight_claim.lua``) removes the task from the in-flight keys and, only if it was
   still there, pushes the CallbackWorker job and adds the stats. While Redis is
   unreachable the step is retried (each attempt shielded from cancellation).
6. **Clean up**: a request payload that came from external storage is deleted only now,
   after its result is in Redis, so a crash before this point can still re-run it.

Cancelled by a hard shutdown after the hand-off, the job's ORIGINAL JSON (same jid) is pushed
back to its queue through the same claim step; so a request whose result was already
claimed is never re-enqueued, and one that is re-enqueued never also delivers a result. An
unexpected failure after the hand-off files the original job into ``retry`` the same way.

Redis keys touched: ``sidekiq:patient_http:inflight_index``, ``…:inflight_jobs``,
``…:totals``, the in-progress list (LREM), ``queues`` and ``queue:<callback queue>``;
through :class:`~patient_sidekiq.worker.inflight.InflightMonitor` the processes set,
``max_connections``, ``gc_lock`` and ``gc_last_run`` keys; stored payloads through the
configured payload stores.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import (
    JobArgumentError,
    MaxCapacityError,
    NotRunningError,
    PatientSidekiqError,
    PayloadStoreError,
    RedisUnavailableError,
)
from patient_sidekiq.http.http_client import ExecutionResult, execute
from patient_sidekiq.http.http_transport import ShardedTransport
from patient_sidekiq.redis_io.lua import LuaScript
from patient_sidekiq.redis_io.outage import RedisOutage
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge
from patient_sidekiq.sidekiq.job import DEFAULT_QUEUE, Job
from patient_sidekiq.sidekiq.launcher import Runtime
from patient_sidekiq.sidekiq.poison import CONTENT_ERRORS, filing_commands
from patient_sidekiq.sidekiq.processor import Work
from patient_sidekiq.wire.jobs import REQUEST_WORKER
from patient_sidekiq.wire.packing import delete_stored, pack, unpack
from patient_sidekiq.wire.payload_store import PayloadReference, is_reference
from patient_sidekiq.wire.request import Request
from patient_sidekiq.worker.inflight import InflightMonitor
from patient_sidekiq.worker.inflight_upkeep import beat_and_sweep
from patient_sidekiq.worker.request_call import (
    RequestCall,
    RequestWorkerSettings,
    callback_job_text,
    flatten_commands,
    result_stats_args,
    result_type,
)
from patient_sidekiq.worker.request_log import RequestReport
from patient_sidekiq.worker.stats import Stats

__all__ = [
    "RequestWorker",
]

log = logging.getLogger(__name__)

RESULT_RETRY_MAX_SECONDS: Final = 30.0
CLAIM_MARKER_TTL: Final = 3600
"""Seconds a claim marker outlives a process that died before deleting it."""

_CLAIM: Final = LuaScript("inflight_claim.lua", __package__)
_CLAIM_KEYS: Final = (keys.INFLIGHT_INDEX, keys.INFLIGHT_JOBS, keys.TOTALS, keys.QUEUES)
_NO_STATS: Final = (0,)  # a claim that delivers no result (a re-enqueue, a filing)
_NO_SCOPE: Final = contextlib.nullcontext()
_shielded: Final = functools.partial(trio.CancelScope, shield=True)


@dataclass(eq=False, slots=True)
class _Task:
    """One request between its hand-off and its claim."""

    request_id: str
    member: str
    job: Job
    queue: str
    claimed: bool = False
    packed_result: dict[str, Any] | None = None  # once packed; a stored one is ours to delete


class RequestWorker:
    """The HTTP processor as a launcher :class:`~patient_sidekiq.sidekiq.launcher.Service`.

    :meth:`serve` registers :meth:`perform` for ``PatientHttp::Sidekiq::RequestWorker``,
    announces the process in the gem's keys, and runs the in-flight heartbeat and orphan
    sweep until the launcher stops it. ``transport`` replaces the sharded httpx transport
    (tests; then not closed here); ``report`` counts and logs each result (default: at info).
    """

    def __init__(
        self,
        settings: RequestWorkerSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        report: RequestReport | None = None,
    ) -> None:
        self.settings = settings
        self.report = report if report is not None else RequestReport()
        self._given_transport = transport
        self._transport: httpx.AsyncBaseTransport | None = None
        self._runtime: Runtime | None = None
        self._monitor: InflightMonitor | None = None
        self._tasks: dict[str, _Task] = {}
        self._settled_markers: list[str] = []  # claim markers whose reply arrived
        self._reserved = 0

    @property
    def process_id(self) -> str:
        """This process's id in the gem's keys (``<host>:<pid>:<hex>``)."""
        return self.settings.process_id

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished (what the capacity check counts)."""
        return self._reserved

    @property
    def monitor(self) -> InflightMonitor:
        """The in-flight monitor (available once serving)."""
        if self._monitor is None:
            raise NotRunningError("Cannot enqueue request: processor is not running")
        return self._monitor

    # --- the service ---

    async def serve(self, runtime: Runtime, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Register the handler, announce the process, then heartbeat and sweep until cancelled."""
        settings = self.settings
        self._runtime = runtime
        self._monitor = InflightMonitor(
            runtime.bridge,
            runtime.client,
            process_id=settings.process_id,
            max_connections=settings.http.max_connections,
            heartbeat_interval=settings.heartbeat_interval,
            orphan_threshold=settings.orphan_threshold,
            clock=runtime.clock,
            dead_policy=runtime.policy,
        )
        try:
            # the HTTP/2 connections' reader and writer tasks live as long as this service
            async with trio.open_nursery() as connections:
                self._transport = self._given_transport or ShardedTransport(
                    settings.http, nursery=connections
                )
                runtime.dispatcher.register(REQUEST_WORKER, self.perform)
                await self._beat_and_sweep()
                task_status.started()
                while True:
                    await trio.sleep(settings.heartbeat_interval)
                    await self._beat_and_sweep()
        finally:
            with trio.CancelScope(shield=True):
                await self._leave()

    async def _beat_and_sweep(self) -> None:
        outage = self._runtime.outage if self._runtime is not None else RedisOutage()
        await beat_and_sweep(self.monitor, self._tasks, outage)

    async def reconcile(self) -> int:
        """Re-enqueue this process's in-flight records of requests it no longer runs.

        Called by the launcher's reconcile pass (periodically and once Redis answers after
        an outage): see :meth:`InflightMonitor.reclaim_own`.
        """
        monitor = self._monitor
        if monitor is None:
            return 0
        return await monitor.reclaim_own(lambda: {task.member for task in self._tasks.values()})

    async def _leave(self) -> None:
        if self._given_transport is None and self._transport is not None:
            await self._transport.aclose()
        if self._settled_markers and self._runtime is not None:
            with contextlib.suppress(PatientSidekiqError):
                await self._runtime.bridge.execute("DEL", *self._settled_markers)
            self._settled_markers = []
        try:
            await self.monitor.leave()
        except PatientSidekiqError as exc:
            log.warning("could not remove this process from the in-flight keys: %s", exc)

    # --- one job ---

    async def perform(self, job: Job, work: Work) -> None:
        """Run one RequestWorker job (the module docstring walks through the steps)."""
        runtime, monitor, transport = self._runtime, self._monitor, self._transport
        if runtime is None or monitor is None or transport is None:
            raise NotRunningError("Cannot enqueue request: processor is not running")
        call = RequestCall.from_args(job.args)
        unpacked = await unpack(call.data, self.settings.payloads)
        request = Request.from_wire(unpacked.data)
        max_connections = self.settings.http.max_connections
        if self._reserved >= max_connections:
            await self._count_refusal(runtime.bridge)
            raise MaxCapacityError(
                f"Cannot enqueue request: already at max capacity ({max_connections} connections)"
            )
        request_id = call.request_id or str(uuid.uuid4())
        if request_id in self._tasks:
            # The in-flight keys hold one task per request id and process: a second job
            # with the same id would overwrite the first's record and one of the two would
            # be dropped at its claim. Retried instead, it runs once the first has ended.
            raise JobArgumentError(
                f"request_id {request_id[:100]!r} is already running in this process"
            )
        queue = job.queue or work.unit.queue or DEFAULT_QUEUE
        task = _Task(request_id, monitor.task_id(request_id), job, queue)
        self._reserved += 1
        self._tasks[request_id] = task  # taken before any await: the check above holds
        try:
            try:
                # Not interruptible: we always know which record holds the job. The fetched
                # bytes: the same form the unit's LREM and the sweep compare with.
                unit = work.unit
                await monitor.hand_off(unit.inprogress_key, task.request_id, unit.raw_bytes)
            except RedisUnavailableError as exc:
                # Outcome unknown: the job is in the in-progress list or in the in-flight
                # keys, never both. Filing it for retry too could run it twice, so neither
                # the processor nor we end it: this process's reconcile finds it in
                # whichever record holds it, once Redis answers, and puts it back.
                work.hand_off()
                log.warning("request %s: hand-off outcome unknown (%s)", request_id, exc)
                return
            work.hand_off()
            try:
                await self._run(runtime, transport, task, call, request)
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await self._requeue_original(runtime, task)
                raise
            except Exception as exc:  # a bug of ours must not lose the job: file it
                log.exception(
                    "request %s failed unexpectedly; filing its job for retry", request_id
                )
                with trio.CancelScope(shield=True):
                    await self._file_original(runtime, task, exc)
                return
            if task.claimed and unpacked.reference is not None:
                # Only a stored payload has anything to delete: no shielded scope for the rest.
                with trio.CancelScope(shield=True):
                    await self._delete_stored(unpacked.reference)
        finally:
            self._tasks.pop(request_id, None)
            self._reserved -= 1

    async def _count_refusal(self, bridge: RedisBridge) -> None:
        self.report.refused()
        try:
            await Stats(bridge).record_capacity_refusal()
        except PatientSidekiqError as exc:
            log.warning("could not count a capacity refusal: %s", exc)

    async def _run(
        self,
        runtime: Runtime,
        transport: httpx.AsyncBaseTransport,
        task: _Task,
        call: RequestCall,
        request: Request,
    ) -> None:
        hops: list[tuple[int, float]] = []
        result = await execute(
            transport,
            self.settings.http,
            request,
            request_id=task.request_id,
            callback_args=call.callback_args,
            # null means false here, as in the gem's processor: its configured default
            # applies only to inline requests, never to a RequestWorker job's null.
            raise_error_responses=bool(call.raise_error_responses),
            on_hop=lambda status, duration: hops.append((status, duration)),
        )
        await self._deliver(runtime, task, call.callback_name, result, hops)

    async def _deliver(
        self,
        runtime: Runtime,
        task: _Task,
        callback_name: str,
        result: ExecutionResult,
        hops: list[tuple[int, float]],
    ) -> None:
        """Push the callback job and claim the task, retrying while Redis is unreachable."""
        settings = self.settings
        data = result.to_wire()
        kind = result_type(result)
        queue = settings.routing.queue_for(callback_name)
        stats = result_stats_args(result, hops)
        packed: dict[str, Any] | None = None
        delay = settings.result_retry_interval
        while True:
            try:
                # One attempt is never cut in half (without a payload store only the claim
                # waits, shielded: no scope); between attempts a hard shutdown may cancel,
                # and the original job is then re-enqueued instead.
                with _shielded() if settings.payloads.default_store is not None else _NO_SCOPE:
                    if packed is None:
                        packed = task.packed_result = await pack(data, settings.payloads)
                    raw = callback_job_text(
                        packed, kind, callback_name, queue, runtime.client.timestamp()
                    )
                    task.claimed = await self._claim(
                        runtime.bridge, task, (), stats=[*stats, queue, keys.queue(queue), raw]
                    )
                break
            except (RedisUnavailableError, PayloadStoreError, OSError) as exc:
                # Thousands of requests may be waiting out one outage: the outage is logged
                # once (runtime.outage), each request's retry only at debug.
                outage = isinstance(exc, RedisUnavailableError)
                if outage:
                    runtime.outage.failed("result push", exc)
                (log.debug if outage else log.warning)(
                    "could not push the result of request %s (retrying in %.1f s): %s",
                    task.request_id,
                    delay,
                    exc,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, RESULT_RETRY_MAX_SECONDS)
        if not task.claimed:
            # Someone else re-enqueued the request (an orphan sweep that took us for dead):
            # it runs again and delivers then; delivering here too would call back twice.
            self.report.dropped()
            log.warning("request %s was re-enqueued elsewhere; result dropped", task.request_id)
            await self._delete_stored_result(packed)
        else:
            self.report.finished(task.request_id, result, queue)

    async def _claim(
        self,
        bridge: RedisBridge,
        task: _Task,
        commands: Sequence[Sequence[Arg]],
        *,
        stats: Sequence[Arg] = _NO_STATS,
    ) -> bool:
        """Run ``commands`` (and deliver ``stats``) if this process still owns ``task``; return
        whether it did (the wait for the answer is shielded: the outcome is always known).

        A delivery (``stats``: the script's delivery arguments) also leaves a claim marker,
        so that a retry after a lost reply learns the claim did land. Markers of earlier
        claims whose replies arrived ride along and are deleted in the same step.
        """
        marker = keys.claim_marker(task.member) if stats is not _NO_STATS else ""
        settled, self._settled_markers = self._settled_markers, []
        args: list[Arg] = [task.member, marker, CLAIM_MARKER_TTL, len(settled), *settled, *stats]
        try:
            reply = await _CLAIM.run(
                bridge, _CLAIM_KEYS, [*args, *flatten_commands(commands)], shielded=True
            )
        except BaseException:
            self._settled_markers += settled  # maybe not deleted: try again next time
            raise
        if marker:
            self._settled_markers.append(marker)
        return reply in (1, 2)

    async def _requeue_original(self, runtime: Runtime, task: _Task) -> None:
        """Push the original job back (same jid) unless its result was already claimed.

        A job that cannot be written again (the push stamps ``enqueued_at``) goes to dead
        instead (poison.py): raising here would strand the task in the in-flight keys.
        """
        try:
            job = task.job if task.job.queue is not None else task.job.with_fields(queue=task.queue)
            _, push = runtime.client.push_commands(job)
        except CONTENT_ERRORS as exc:
            await self._file_original(runtime, task, exc)
            return
        await self._claim_instead(runtime, task, push, f"re-enqueued (jid {job.jid})")

    async def _file_original(self, runtime: Runtime, task: _Task, error: Exception) -> None:
        """File the original job into ``retry``/``dead`` as Sidekiq would, via the claim.

        Never raises for the job's content: a job whose filing cannot be written goes to
        dead with its original bytes (poison.py), so the task always leaves the in-flight keys.
        """
        outcome, commands = filing_commands(
            task.job, error, raw=task.job.raw, queue=task.queue, policy=runtime.policy
        )
        kind = outcome.kind if outcome is not None else "dead"
        await self._claim_instead(runtime, task, commands, f"filed into {kind}")

    async def _claim_instead(
        self, runtime: Runtime, task: _Task, commands: Sequence[Sequence[Arg]], done: str
    ) -> None:
        """Claim ``task`` for ``commands`` in place of its result (unless already claimed).

        A result already packed and stored is then nobody's: it is deleted. If Redis cannot
        be reached the task stays in the in-flight keys, where any process's sweep finds it.
        """
        if task.claimed:
            return
        try:
            task.claimed = await self._claim(runtime.bridge, task, commands)
        except PatientSidekiqError as exc:
            log.warning(
                "request %s not %s (recovered later by a sweep): %s", task.request_id, done, exc
            )
            return
        if task.claimed:
            log.info("request %s %s", task.request_id, done)
            await self._delete_stored_result(task.packed_result)

    async def _delete_stored(self, reference: PayloadReference | None) -> None:
        try:
            await delete_stored(reference, self.settings.payloads)
        except (PatientSidekiqError, OSError) as exc:
            log.warning("could not delete a stored payload: %s", exc)

    async def _delete_stored_result(self, packed: dict[str, Any] | None) -> None:
        if packed is not None and is_reference(packed):
            await self._delete_stored(PayloadReference.from_wire(packed))
