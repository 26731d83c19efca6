"""A RequestWorker job's arguments, the settings it runs with, and the callback job it yields.

Role: the values :class:`~patient_sidekiq.worker.request_worker.RequestWorker` works with —
:class:`RequestCall` (the five job arguments, checked as Ruby's ``perform`` takes them),
:class:`CallbackRouting` (which queue a result goes to), :class:`RequestWorkerSettings` — and
the pure builders of what a finished request writes: the CallbackWorker job and the gem's
stats, as the claim script's arguments (wire spec §1, §8).

Touches no Redis keys itself (its stats arguments are for ``sidekiq:patient_http:totals``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from patient_sidekiq.config.model import Config
from patient_sidekiq.errors import InvalidJobError, JobArgumentError
from patient_sidekiq.http.http_client import ExecutionResult
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.redis_io.redis_bridge import Arg
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import new_jid
from patient_sidekiq.wire.callback_args import validate_callback_args
from patient_sidekiq.wire.failures import HttpError, RedirectError
from patient_sidekiq.wire.jobs import (
    CALLBACK_WORKER,
    DEFAULT_CALLBACK_QUEUE,
    DEFAULT_PYTHON_CALLBACK_QUEUE,
)
from patient_sidekiq.wire.packing import PayloadSettings
from patient_sidekiq.wire.response import Response
from patient_sidekiq.worker.inflight import gem_process_id
from patient_sidekiq.worker.stats import TOTALS_TTL, counted_status, duration_text

__all__ = [
    "CallbackRouting",
    "RequestCall",
    "RequestWorkerSettings",
    "callback_job_text",
    "flatten_commands",
    "result_stats_args",
    "result_type",
]

Command = tuple[Arg, ...]


def _never_python(callback_name: str) -> bool:
    return False


@dataclass(frozen=True)
class CallbackRouting:
    """Which queue a CallbackWorker job goes to.

    ``is_python_callback(name)`` is the hook the Python callback registry plugs into: a
    callback registered in Python goes to ``python_callback_queue``, every other one to
    ``callback_queue`` (where the Ruby app's Sidekiq runs it).
    """

    callback_queue: str = DEFAULT_CALLBACK_QUEUE
    python_callback_queue: str = DEFAULT_PYTHON_CALLBACK_QUEUE
    is_python_callback: Callable[[str], bool] = field(default=_never_python, compare=False)

    def queue_for(self, callback_name: str) -> str:
        """Return the queue of the CallbackWorker job for ``callback_name``."""
        if self.is_python_callback(callback_name):
            return self.python_callback_queue
        return self.callback_queue


@dataclass(frozen=True)
class RequestWorkerSettings:
    """Everything the HTTP processor needs; defaults are the gem's."""

    http: HttpSettings = field(default_factory=HttpSettings)
    payloads: PayloadSettings = field(default_factory=PayloadSettings)
    routing: CallbackRouting = field(default_factory=CallbackRouting)
    heartbeat_interval: float = 60.0
    orphan_threshold: float = 300.0
    result_retry_interval: float = 0.5
    """First wait (s) before pushing a result again while Redis is unreachable; doubles up
    to 30 s."""
    process_id: str = field(default_factory=gem_process_id)

    @classmethod
    def from_config(
        cls, config: Config, payloads: PayloadSettings, routing: CallbackRouting, http: HttpSettings
    ) -> RequestWorkerSettings:
        """The settings a worker built from ``config`` runs with (in-flight intervals)."""
        return cls(
            http=http,
            payloads=payloads,
            routing=routing,
            heartbeat_interval=config.heartbeat_interval,
            orphan_threshold=config.orphan_threshold,
        )


@dataclass(frozen=True, slots=True)
class RequestCall:
    """The five arguments of a RequestWorker job, with their types checked."""

    data: Any
    callback_name: str
    raise_error_responses: bool | None
    callback_args: dict[str, Any] | None
    request_id: str | None

    @classmethod
    def from_args(cls, args: Sequence[Any]) -> RequestCall:
        """Check ``args`` as ``perform(data, callback, raise_error_responses, callback_args,
        request_id)`` would; raise :class:`JobArgumentError` naming the bad one.

        A sixth argument (a processor name: string or null, which later gem releases add
        with a default) is accepted and ignored, as Ruby's optional parameter would be.
        """
        if not 5 <= len(args) <= 6:
            raise JobArgumentError(f"wrong number of arguments (given {len(args)}, expected 5..6)")
        data, callback_name, raise_errors, callback_args, request_id = args[:5]
        if len(args) == 6 and args[5] is not None and not isinstance(args[5], str):
            raise JobArgumentError(f"processor name must be a string or null, got {_kind(args[5])}")
        if not isinstance(data, dict):
            raise JobArgumentError(f"request data must be a JSON object, got {_kind(data)}")
        if not isinstance(callback_name, str) or not callback_name:
            raise JobArgumentError(
                f"callback name must be a non-empty string, got {_kind(callback_name)}"
            )
        if raise_errors is not None and not isinstance(raise_errors, bool):
            raise JobArgumentError(
                f"raise_error_responses must be true, false or null, got {_kind(raise_errors)}"
            )
        if callback_args is not None and not isinstance(callback_args, dict):
            raise JobArgumentError(
                f"callback_args must be a JSON object or null, got {_kind(callback_args)}"
            )
        if request_id is not None and (not isinstance(request_id, str) or not request_id):
            raise JobArgumentError(
                f"request_id must be a non-empty string or null, got {_kind(request_id)}"
            )
        return cls(
            data,
            callback_name,
            raise_errors,
            None if callback_args is None else validate_callback_args(callback_args),
            request_id,
        )


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def result_type(result: ExecutionResult) -> str:
    """Return the CallbackWorker ``result_type`` of a result: ``response`` or ``error``."""
    return "response" if isinstance(result, Response) else "error"


_CALLBACK_CLASS = f',"class":{rubyjson.dumps_string(CALLBACK_WORKER)},"jid":"'


def callback_job_text(
    packed: dict[str, Any], kind: str, callback_name: str, queue: str, now: float | int
) -> str:
    """Return the JSON text of the CallbackWorker job ``[data, result_type, callback_name]``.

    The text ``Job.new(CALLBACK_WORKER, [packed, kind, callback_name], queue=queue,
    retry=True, created_at=now, enqueued_at=now)`` writes, byte for byte (the key order of
    Sidekiq's client; ``now`` from :meth:`SidekiqClient.timestamp`), without building and
    validating a job dict around the result and serialising it all again: only the packed
    result goes through :func:`rubyjson.dumps_native`, each other value is written as it would be
    there. Raises :class:`InvalidJobError` for an empty queue, as the push would.
    """
    if not queue:
        raise InvalidJobError("job must include a valid queue name")
    # A float (Sidekiq 7) is the common stamp: written without the general encoder.
    stamp = rubyjson.dumps_float(now) if type(now) is float else rubyjson.dumps(now)
    return "".join(
        (
            '{"retry":true,"queue":',
            rubyjson.dumps_string(queue),
            ',"args":[',
            rubyjson.dumps_native(packed),
            ",",
            rubyjson.dumps_string(kind),
            ",",
            rubyjson.dumps_string(callback_name),
            "]",
            _CALLBACK_CLASS,
            new_jid(),
            '","created_at":',
            stamp,
            ',"enqueued_at":',
            stamp,
            "}",
        )
    )


def result_stats_args(result: ExecutionResult, hops: Iterable[tuple[int, float]] = ()) -> list[Arg]:
    """Return the totals updates of one finished request (wire spec §8) as the claim script's
    compact stats arguments: how many requests, each one's duration (as HINCRBYFLOAT gets
    it), the counted status or "", the error kind or "", the totals TTL.

    Every followed redirect hop and the final exchange count as a request; an error adds
    ``errors:http_error``, ``errors:redirect`` or ``errors:exception`` (every transport
    failure, as the gem counts the raw exception). Only a response delivered to
    ``on_complete`` counts its ``http_status``: the gem takes the status from the task's
    completed response, which neither a followed hop nor an HttpError has. The script runs
    the commands :class:`Stats`' builders would (one EXPIRE at the end), in their order.
    """
    durations = [duration_text(duration) for _status, duration in hops]
    durations.append(duration_text(result.duration or 0.0))
    status: int | str = ""
    if isinstance(result, Response):
        kind = ""
        if counted_status(result.status):
            status = int(result.status)
    elif isinstance(result, HttpError):
        kind = "http_error"
    elif isinstance(result, RedirectError):
        kind = "redirect"
    else:
        kind = "exception"
    return [len(durations), *durations, status, kind, TOTALS_TTL]


def flatten_commands(commands: Iterable[Sequence[Arg]]) -> list[Arg]:
    flat: list[Arg] = []
    for command in commands:
        flat.append(len(command))
        flat.extend(command)
    return flat
