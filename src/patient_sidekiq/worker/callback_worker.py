"""The Python callback worker: runs ``PatientHttp::Sidekiq::CallbackWorker`` jobs.

Wire spec §1, §4, §9.

A CallbackWorker job is ``[data, result_type, callback_name]``. For one job:

1. **Check** the three args (:class:`CallbackCall`); wrong ones raise ``ArgumentError``
   (:class:`~patient_sidekiq.errors.JobArgumentError`) and the processor files the job
   into ``retry`` as Ruby's Sidekiq would.
2. **Whose is it**: a callback name not in the
   :class:`~patient_sidekiq.registry.callbacks.CallbackRegistry` belongs to the Ruby app.
   Unless this launcher polls the Ruby callback queue itself, the job's exact text moves
   there (``SADD queues`` + ``LPUSH queue:<ruby queue>`` + the acknowledging ``LREM``, one
   MULTI) for a Ruby Sidekiq to run. If it does poll that queue,
   moving would only bring the job back here, so the job fails with
   :class:`~patient_sidekiq.errors.UnknownCallbackError` naming the callback (retried).
3. **Run**: unpack ``data`` (stored payload → decrypt), load the Response or the failure,
   run the ``after_completion``/``after_error`` hooks, then ``on_complete``/``on_error`` on
   a new instance of the class. ``async def`` methods are awaited on the trio loop; plain
   methods run in a worker thread (at most ``concurrency`` at once) so a blocking callback
   never stalls the loop the HTTP processor shares. Any exception fails the job (retried):
   the processor logs it at ERROR with its traceback, naming the callback (or hook) and the
   request id, and files it with an ``error_backtrace`` as the ``backtrace`` setting says
   when the job has no ``backtrace`` option (:attr:`CallbackWorkerSettings.backtrace`).
4. **Clean up**: a stored payload is deleted once the callback succeeded. Unlike the gem
   (which deletes it in ``ensure``), a failed callback keeps it, so its retry finds it.

When a job's retries run out (the processor's ``on_exhausted``), a job with result type
``error`` runs the ``on_retries_exhausted`` hooks, then its stored payload is deleted (the
gem's ``sidekiq_retries_exhausted`` block means to, but calls a method that does not exist:
docs/patient-http-wire.md §6).

One worker serves every launcher of a process that should run callback jobs; register it
in each launcher's dispatcher, naming the queues that launcher polls (the worker needs
them to know whether the Ruby callback queue is its own)::

    worker = CallbackWorker(CallbackWorkerSettings(payloads, hooks, registry), bridge)
    worker.register(http_dispatcher, ["patient_http"])
    worker.register(callbacks_dispatcher, ["patient_http_callbacks"])

``bridge`` is any entered :class:`~patient_sidekiq.redis_io.redis_bridge.RedisBridge` on the
launchers' Redis (it only moves jobs to the Ruby queue); launchers sharing one worker
share its thread limit.

Redis keys touched: ``queues`` and ``queue:<ruby callback queue>`` (moving a job), the
in-progress list (its LREM); stored payloads through the configured payload stores.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from patient_sidekiq.errors import (
    ConfigurationError,
    JobArgumentError,
    PatientSidekiqError,
    RedisUnavailableError,
    UnknownCallbackError,
)
from patient_sidekiq.redis_io.redis_bridge import RedisBridge, raise_first_error
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.registry.hooks import Hooks
from patient_sidekiq.sidekiq.client import push_raw_commands
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.processor import Dispatcher, Handler, Work
from patient_sidekiq.wire.failures import load_failure
from patient_sidekiq.wire.jobs import CALLBACK_WORKER, DEFAULT_CALLBACK_QUEUE
from patient_sidekiq.wire.packing import PayloadSettings, delete_stored, unpack
from patient_sidekiq.wire.payload_store import PayloadReference, is_reference
from patient_sidekiq.wire.response import Response
from patient_sidekiq.worker.counters import CallbackCounters

__all__ = [
    "RESULT_TYPES",
    "CallbackCall",
    "CallbackWorker",
    "CallbackWorkerSettings",
]

log = logging.getLogger(__name__)

RESULT_TYPES: Final = ("response", "error")


@dataclass(frozen=True)
class CallbackWorkerSettings:
    """What the callback worker needs.

    ``ruby_callback_queue`` is where jobs for callbacks not registered in Python go (the
    queue the Ruby app's Sidekiq runs CallbackWorker jobs from); ``concurrency`` bounds the
    worker threads running plain (not ``async``) callbacks at once.
    """

    payloads: PayloadSettings
    hooks: Hooks
    registry: CallbackRegistry
    ruby_callback_queue: str = DEFAULT_CALLBACK_QUEUE
    concurrency: int = 10
    registered_elsewhere: Callable[[str], bool] = field(default=lambda name: False)
    """Whether another live worker runs this Python callback (the callback directory)."""
    backtrace: bool | int = True
    """The ``backtrace`` option (true, false or N lines) of a failing Python callback's
    job when the job sets none: what its retry/dead entry keeps (``Config.backtrace``)."""

    def __post_init__(self) -> None:
        if not self.ruby_callback_queue:
            raise ConfigurationError("ruby_callback_queue must be a queue name")
        if self.concurrency < 1:
            raise ConfigurationError(
                f"callback concurrency must be at least 1, not {self.concurrency}"
            )


@dataclass(frozen=True, slots=True)
class CallbackCall:
    """The three arguments of a CallbackWorker job, with their types checked."""

    data: dict[str, Any]
    result_type: str
    callback_name: str

    @classmethod
    def from_args(cls, args: Sequence[Any]) -> CallbackCall:
        """Check ``args`` as ``perform(data, result_type, callback_service_name)`` would;
        raise :class:`JobArgumentError` naming the bad one."""
        if len(args) != 3:
            raise JobArgumentError(f"wrong number of arguments (given {len(args)}, expected 3)")
        data, result_type, callback_name = args
        if not isinstance(callback_name, str) or not callback_name:
            raise JobArgumentError(
                f"callback name must be a non-empty string, got {callback_name!r}"
            )
        if not isinstance(data, dict):
            raise JobArgumentError(f"result data must be a JSON object, got {data!r}")
        if result_type not in RESULT_TYPES:
            raise JobArgumentError(f"Unknown result_type: {result_type}")
        return cls(data, result_type, callback_name)


def _note_request(context: dict[str, str], request_id: str | None) -> None:
    if request_id is not None:
        context["request_id"] = request_id


def _call_sync(cls: type, method: str, value: object) -> object:
    return getattr(cls(), method)(value)


class CallbackWorker:
    """Runs CallbackWorker jobs for the callbacks in ``settings.registry``.

    ``bridge`` (entered by the caller, on the launchers' Redis) moves jobs of callbacks not
    registered in Python to the Ruby callback queue. One instance may serve several
    launchers of one process (see the module docstring).
    """

    def __init__(self, settings: CallbackWorkerSettings, bridge: RedisBridge) -> None:
        self.settings = settings
        self._bridge = bridge
        self._threads = trio.CapacityLimiter(settings.concurrency)
        self.counters = CallbackCounters()
        """``on_complete``/``on_error`` calls that ended, and those that raised (/metrics)."""

    def register(self, dispatcher: Dispatcher, polled_queues: Collection[str]) -> None:
        """Route CallbackWorker jobs of a launcher polling ``polled_queues`` to this worker,
        with :meth:`retries_exhausted` as their ``on_exhausted``."""
        dispatcher.register(
            CALLBACK_WORKER, self.handler(polled_queues), on_exhausted=self.retries_exhausted
        )

    def handler(self, polled_queues: Collection[str]) -> Handler:
        """Return the CallbackWorker job handler for a launcher polling ``polled_queues``.

        Register :meth:`retries_exhausted` beside it (``Dispatcher.register(…,
        on_exhausted=…)``), or use :meth:`register`, which does both.
        """
        polled = frozenset(polled_queues)

        async def handle(job: Job, work: Work) -> None:
            await self.perform(job, work, polled_queues=polled)

        return handle

    async def perform(self, job: Job, work: Work, *, polled_queues: Collection[str]) -> None:
        """Run one CallbackWorker job (the module docstring walks through the steps)."""
        call = CallbackCall.from_args(job.args)
        callback_class = self.settings.registry.get(call.callback_name)
        if callback_class is None:
            await self._pass_to_ruby(job, work, call, polled_queues)
            return
        # From here on the app's Python code runs: its failures keep their backtrace.
        work.default_backtrace = self.settings.backtrace
        context = work.context = {"callback": call.callback_name}
        unpacked = await unpack(call.data, self.settings.payloads)
        hooks = self.settings.hooks
        if call.result_type == "response":
            response = Response.from_wire(unpacked.data)
            _note_request(context, response.request_id)
            await hooks.run_completion(response, in_thread=self._in_thread, context=context)
            context["method"] = "on_complete"
            await self._invoke(callback_class, "on_complete", response)
        else:
            error = load_failure(unpacked.data)
            _note_request(context, error.request_id)
            await hooks.run_error(error, in_thread=self._in_thread, context=context)
            context["method"] = "on_error"
            await self._invoke(callback_class, "on_error", error)
        if unpacked.reference is not None:
            await self._delete_stored(unpacked.reference)

    async def _in_thread(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` in a callback thread (sync callbacks and sync hooks share them)."""
        # Abandoned on a hard shutdown like Sidekiq abandons a job thread: the job is
        # requeued, and the thread (a daemon) ends with the process.
        return await trio.to_thread.run_sync(
            function, limiter=self._threads, abandon_on_cancel=True
        )

    async def _invoke(self, callback_class: type, method: str, value: object) -> None:
        try:
            if inspect.iscoroutinefunction(getattr(callback_class, method)):
                await getattr(callback_class(), method)(value)
                return
            outcome = await self._in_thread(
                functools.partial(_call_sync, callback_class, method, value)
            )
            if inspect.isawaitable(outcome):  # a plain method that returned a coroutine
                await outcome
        except Exception:
            self.counters.failed += 1
            raise
        finally:
            self.counters.run += 1  # a cancelled one too: it ran, and Sidekiq requeues it

    async def _pass_to_ruby(
        self,
        job: Job,
        work: Work,
        call: CallbackCall,
        polled_queues: Collection[str],
    ) -> None:
        queue = self.settings.ruby_callback_queue
        if self.settings.registered_elsewhere(call.callback_name):
            # Another worker has the module, this one does not (a deploy in progress): the
            # Ruby queue would never run it, Sidekiq's retry brings it back here for them.
            raise UnknownCallbackError(
                f"callback {call.callback_name!r} is registered by another live worker, not "
                "by this one (start every worker with the same -r modules)"
            )
        if queue in polled_queues:
            raise UnknownCallbackError(
                f"callback {call.callback_name!r} is not registered in Python "
                f"(use @patient_sidekiq.callback), and its Ruby queue {queue!r} is polled by "
                "this worker, so no Ruby process gets to run it"
            )
        # The fetched bytes, moved byte for byte (even ones that are not UTF-8).
        commands = [*push_raw_commands(queue, work.unit.raw_bytes), work.acknowledge_command()]
        try:
            with trio.CancelScope(shield=True):
                replies = await self._bridge.transaction(commands)
        except RedisUnavailableError as exc:
            # Outcome unknown: the job may already be in the Ruby queue. Filing it for retry
            # too could run its callback twice, so leave it in the in-progress list, from
            # where shutdown or recovery puts it back if the move did not land.
            work.hand_off()
            log.warning("could not move jid %s to queue %s: %s", job.jid, queue, exc)
            return
        work.hand_off()  # the MULTI ran, acknowledgement included
        raise_first_error(replies)
        log.info(
            "callback %s is not registered in Python: jid %s moved to queue %s",
            call.callback_name,
            job.jid,
            queue,
        )

    async def retries_exhausted(self, job: Job, error: BaseException) -> None:
        """The processor's ``on_exhausted``: the gem's ``sidekiq_retries_exhausted`` block.

        For result type ``error``, run the ``on_retries_exhausted`` hooks with the loaded
        failure (hook failures are logged by :class:`Hooks`); then delete a stored payload.
        Unlike the gem, a job whose args are malformed runs no hooks. Nothing here raises.
        """
        args = job.args
        data = args[0] if args else None
        try:
            call: CallbackCall | None = CallbackCall.from_args(args)
        except JobArgumentError:
            call = None  # a malformed job has no error worth reporting, only a payload to free
        if call is not None and call.result_type == "error":
            try:
                unpacked = await unpack(data, self.settings.payloads)
                failure = load_failure(unpacked.data)
            except (PatientSidekiqError, OSError) as exc:
                log.warning(
                    "on_retries_exhausted hooks skipped for jid %s: its error cannot be loaded: %s",
                    job.jid,
                    exc,
                )
            else:
                context = {"jid": str(job.jid), "callback": call.callback_name}
                _note_request(context, failure.request_id)
                await self.settings.hooks.run_retries_exhausted(
                    failure, in_thread=self._in_thread, context=context
                )
        if is_reference(data):
            assert isinstance(data, dict)
            try:
                reference = PayloadReference.from_wire(data)
            except PatientSidekiqError as exc:
                log.warning("dead jid %s has an unusable payload reference: %s", job.jid, exc)
                return
            await self._delete_stored(reference)

    async def _delete_stored(self, reference: PayloadReference) -> None:
        try:
            with trio.CancelScope(shield=True):
                await delete_stored(reference, self.settings.payloads)
        except (PatientSidekiqError, OSError) as exc:
            log.warning(
                "could not delete stored payload %s/%s: %s", reference.store, reference.key, exc
            )
