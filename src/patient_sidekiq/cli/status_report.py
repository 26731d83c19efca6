"""What ``patient-sidekiq status`` and ``patient-sidekiq inflight`` show: the records.

Role: the frozen records of a status snapshot (:class:`StatusReport` and its parts) and of
one request in flight (:class:`InflightEntry`) and their JSON form. Figures are rounded as
the gem's Web tab rounds them (:func:`ruby_round`). :mod:`patient_sidekiq.cli.status_collect`
reads them from Redis, :mod:`patient_sidekiq.cli.status_render` draws their tables. A value
that could not be read is ``None`` in a record (``?`` in the tables).

Processes are named by their Sidekiq identity (``hostname:pid:nonce``), as the Busy page's
job list and the worker's "started" log line name them; a ``patient-sidekiq run`` is two
identities, its HTTP processor (role ``requests``) and its Python callbacks (``callbacks``).

Redis keys: none (see :mod:`patient_sidekiq.cli.status_collect`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CALLBACKS_ROLE",
    "FRESH_BEAT_SECONDS",
    "REQUESTS_ROLE",
    "HttpCapacity",
    "HttpTotals",
    "InflightEntry",
    "ProcessStatus",
    "QueueStatus",
    "StatusReport",
    "inflight_to_json",
    "ruby_round",
    "utilization",
]

FRESH_BEAT_SECONDS: Final = 30.0
"""A process whose last heartbeat is older (three of Sidekiq's 10 s beats) counts as dead,
even while its 60 s process hash lingers (a ``kill -9``, a hung event loop)."""
OURS: Final = "patient-sidekiq"
"""How our processes' ``info.version`` starts (Ruby's is Sidekiq's version number)."""
REQUESTS_ROLE: Final = "requests"
CALLBACKS_ROLE: Final = "callbacks"
"""The Sidekiq labels :mod:`patient_sidekiq.worker.runner` gives its two launchers (the
worker layer cannot import this one; tests/cli/test_status_live.py pins the two together)."""

# --- rounding as the Web tab rounds ---


def ruby_round(value: float, digits: int) -> float:
    """Round as Ruby's ``Float#round(digits)`` does (half away from zero, then corrected).

    The figures must equal the gem's Web tab, and Python's ``round`` rounds half to even.
    """
    scale = 10.0**digits
    scaled = value * scale
    rounded = math.copysign(math.floor(abs(scaled) + 0.5), scaled)
    if value > 0 and (rounded + 0.5) / scale <= value:
        rounded += 1
    elif value < 0 and (rounded - 0.5) / scale >= value:
        rounded -= 1
    return rounded / scale


def utilization(inflight: int, capacity: int) -> float:
    """Percent used, one decimal, as the Web tab computes it (0 without capacity)."""
    return ruby_round(inflight / capacity * 100, 1) if capacity > 0 else 0.0


# --- the records ---


@dataclass(frozen=True)
class HttpCapacity:
    """One Web tab row: the HTTP processors of one ``hostname:pid``."""

    key: str
    inflight: int
    capacity: int

    @property
    def utilization(self) -> float:
        """Percent of the capacity in use, rounded like the Web tab."""
        return utilization(self.inflight, self.capacity)

    def to_json(self) -> dict[str, Any]:
        """``{"key", "inflight", "capacity", "utilization"}``."""
        return {
            "key": self.key,
            "inflight": self.inflight,
            "capacity": self.capacity,
            "utilization": self.utilization,
        }


@dataclass(frozen=True)
class ProcessStatus:
    """One Sidekiq process (``identity`` set) or an HTTP processor without one (``None``).

    Fields that were absent or unreadable are ``None``; ``malformed`` says the ``info``
    JSON could not be read at all. ``http`` is ``None`` when the process runs no HTTP
    processor the gem's keys know of. ``role`` is ``requests`` or ``callbacks`` for a
    patient-sidekiq process, ``ruby`` or ``ruby requests`` (it runs the gem's HTTP processor)
    for a Ruby one. ``alive``: the heartbeat is younger than :data:`FRESH_BEAT_SECONDS` (for
    an HTTP processor without a process hash: its ``max_connections`` key still exists).
    """

    identity: str | None
    hostname: str | None = None
    pid: int | None = None
    tag: str | None = None
    version: str | None = None
    started_at: float | None = None
    concurrency: int | None = None
    busy: int | None = None
    quiet: bool | None = None
    beat: float | None = None
    rss_kb: int | None = None
    queues: tuple[str, ...] | None = None
    malformed: bool = False
    http: HttpCapacity | None = None
    labels: tuple[str, ...] | None = None
    role: str | None = None
    alive: bool | None = None

    @property
    def name(self) -> str:
        """``hostname:pid`` as the Busy page shows it, else the identity or the HTTP key."""
        if self.hostname is not None and self.pid is not None:
            return f"{self.hostname}:{self.pid}"
        if self.identity is not None:
            return self.identity
        return self.http.key if self.http is not None else "?"

    @property
    def patient_sidekiq(self) -> bool:
        """A process of ours (its ``info.version`` says so), not a Ruby Sidekiq."""
        return self.version is not None and self.version.startswith(OURS)

    def to_json(self) -> dict[str, Any]:
        """Every field by name; ``http`` is :meth:`HttpCapacity.to_json` or ``null``."""
        return {
            "identity": self.identity,
            "hostname": self.hostname,
            "pid": self.pid,
            "tag": self.tag,
            "version": self.version,
            "started_at": self.started_at,
            "concurrency": self.concurrency,
            "busy": self.busy,
            "quiet": self.quiet,
            "beat": self.beat,
            "rss_kb": self.rss_kb,
            "queues": list(self.queues) if self.queues is not None else None,
            "malformed": self.malformed,
            "http": self.http.to_json() if self.http is not None else None,
            "labels": list(self.labels) if self.labels is not None else None,
            "role": self.role,
            "alive": self.alive,
            "patient_sidekiq": self.patient_sidekiq,
        }


@dataclass(frozen=True)
class HttpTotals:
    """``sidekiq:patient_http:totals`` read as the gem's ``Stats#get_totals`` reads it.

    Absent fields are 0 (as in the gem); a field that is not a number is ``None``.
    """

    requests: int | None = 0
    duration: float | None = 0.0
    errors: int | None = 0
    max_capacity_exceeded: int | None = 0
    errors_by_type: Mapping[str, int | None] | None = None
    http_statuses: Mapping[str, int | None] | None = None

    @property
    def average_duration(self) -> float | None:
        """Seconds per request, three decimals: the Web tab's ``avg_duration``."""
        if self.requests is None or self.duration is None:
            return None
        return ruby_round(self.duration / self.requests, 3) if self.requests > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Counters, ``duration``/``average_duration`` seconds, the two breakdowns."""
        return {
            "requests": self.requests,
            "duration": self.duration,
            "average_duration": self.average_duration,
            "errors": self.errors,
            "errors_by_type": dict(self.errors_by_type or {}),
            "http_statuses": dict(self.http_statuses or {}),
            "max_capacity_exceeded": self.max_capacity_exceeded,
        }


@dataclass(frozen=True)
class QueueStatus:
    """A queue listed in ``queues``: its length and Sidekiq's latency (seconds)."""

    name: str
    size: int | None
    latency: float | None

    def to_json(self) -> dict[str, Any]:
        """``{"name", "size", "latency"}``."""
        return {"name": self.name, "size": self.size, "latency": self.latency}


@dataclass(frozen=True)
class StatusReport:
    """A snapshot of the cluster for ``patient-sidekiq status``.

    ``inflight_total`` and ``capacity_total`` are the Web tab's "currently in flight" and
    "max capacity" (live processes only); ``inflight_registered`` counts every member of
    the in-flight index, including those of dead processes awaiting the orphan sweep.
    """

    processes: tuple[ProcessStatus, ...]
    totals: HttpTotals
    queues: tuple[QueueStatus, ...]
    retry_size: int | None
    dead_size: int | None
    scheduled_size: int | None
    inflight_total: int
    capacity_total: int
    inflight_registered: int | None
    generated_at: float

    @property
    def utilization(self) -> float:
        """Percent of the whole capacity in use, rounded like the Web tab."""
        return utilization(self.inflight_total, self.capacity_total)

    def live_workers(self, hostname: str | None = None) -> list[ProcessStatus]:
        """The patient-sidekiq processes whose heartbeat is fresh (of ``hostname`` only)."""
        return [
            p
            for p in self.processes
            if p.patient_sidekiq and p.alive and (hostname is None or p.hostname == hostname)
        ]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; keys are stable, numbers are numbers, unknown values ``null``.

        ``generated_at`` is epoch seconds; ``latency``, ``duration`` and
        ``average_duration`` are seconds; ``utilization`` is a percentage;
        ``live_workers`` counts the patient-sidekiq processes with a fresh heartbeat.
        """
        return {
            "generated_at": self.generated_at,
            "processes": [process.to_json() for process in self.processes],
            "inflight_total": self.inflight_total,
            "capacity_total": self.capacity_total,
            "utilization": self.utilization,
            "inflight_registered": self.inflight_registered,
            "totals": self.totals.to_json(),
            "queues": [queue.to_json() for queue in self.queues],
            "retry_size": self.retry_size,
            "dead_size": self.dead_size,
            "scheduled_size": self.scheduled_size,
            "live_workers": len(self.live_workers()),
        }


@dataclass(frozen=True)
class InflightEntry:
    """One request in the gem's in-flight keys.

    The gem records no start time (every heartbeat overwrites the index score), so ``age``
    is measured from the job's ``enqueued_at`` (else ``created_at``), Sidekiq-unit-aware:
    the request has run at most that long (queue wait included). ``heartbeat_age`` is the
    time since the owner last refreshed the score, which is what the orphan sweep judges.
    ``request`` is ``"plain"`` (``http_method``/``url`` known), ``"encrypted"``,
    ``"stored"``, ``"missing"`` (no job recorded) or ``"?"`` (unreadable job). ``url`` has
    its password and query values hidden. ``process_id`` is the gem's id of the owning HTTP
    processor; ``process_identity`` the Sidekiq identity of the process that runs it (the
    Busy page's and the log's name), ``None`` when no process hash of its host:pid is left.
    """

    task_id: str
    request_id: str
    process_id: str
    process_alive: bool
    heartbeat_at: float | None
    heartbeat_age: float | None
    enqueued_at: float | None
    age: float | None
    queue: str | None
    jid: str | None
    callback_name: str | None
    request: str
    http_method: str | None
    url: str | None
    process_identity: str | None = None

    @property
    def process_name(self) -> str:
        """The owner as the Busy page's process list names it: ``hostname:pid``."""
        return ":".join(self.process_id.split(":", 2)[:2])

    def to_json(self) -> dict[str, Any]:
        """Every field by name, and ``process_name``; times are epoch seconds, ages seconds."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return fields | {"process_name": self.process_name}


def inflight_to_json(entries: Iterable[InflightEntry]) -> list[dict[str, Any]]:
    """The entries as JSON-ready dicts, in the given order."""
    return [entry.to_json() for entry in entries]
