"""What ``patient-sidekiq status`` and ``patient-sidekiq inflight`` show: the records.

Role: the frozen records of a status snapshot (:class:`StatusReport` and its parts) and of
one request in flight (:class:`InflightEntry`), their JSON form, and their text for an
80-column terminal. Figures are rounded as the gem's Web tab rounds them (:func:`ruby_round`).
:mod:`patient_sidekiq.cli.status_collect` reads them from Redis. A value that could not be read is
``None`` in a record and ``?`` in the text.

Redis keys: none (see :mod:`patient_sidekiq.cli.status_collect`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "HttpCapacity",
    "HttpTotals",
    "InflightEntry",
    "ProcessStatus",
    "QueueStatus",
    "StatusReport",
    "inflight_to_json",
    "render_inflight",
    "ruby_round",
    "utilization",
]

WIDTH: Final = 80

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
    processor the gem's keys know of.
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

    @property
    def name(self) -> str:
        """``hostname:pid`` as the Busy page shows it, else the identity or the HTTP key."""
        if self.hostname is not None and self.pid is not None:
            return f"{self.hostname}:{self.pid}"
        if self.identity is not None:
            return self.identity
        return self.http.key if self.http is not None else "?"

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

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; keys are stable, numbers are numbers, unknown values ``null``.

        ``generated_at`` is epoch seconds; ``latency``, ``duration`` and
        ``average_duration`` are seconds; ``utilization`` is a percentage.
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
        }

    def render_text(self) -> str:
        """A compact table for an 80-column terminal; ``?`` marks unreadable values."""
        lines = [f"Processes ({len(self.processes)})"]
        rows = [_process_row(p) for p in self.processes]
        headers = ["PROCESS", "TAG", "BUSY", "THREADS", "QUIET", "RSS MB", "HTTP", "USED"]
        lines += _table(headers, rows, "llrrlrrr") if rows else ["  (none)"]
        if any(p.identity is None for p in self.processes):
            lines.append("  (-: an HTTP processor without a Sidekiq process hash of its host:pid)")
        totals = self.totals
        lines += [
            "",
            f"HTTP  in flight {_number(self.inflight_total)} of {_number(self.capacity_total)}"
            f" ({self.utilization:.1f}%), {_number(self.inflight_registered)} registered",
            f"  requests {_number(totals.requests)}  errors {_number(totals.errors)}"
            f"  avg {_shown(totals.average_duration)} s"
            f"  refused at capacity {_number(totals.max_capacity_exceeded)}",
        ]
        if totals.errors_by_type:
            lines.append(_wrapped("  errors:", _pairs(totals.errors_by_type)))
        if totals.http_statuses:
            lines.append(_wrapped("  statuses:", _pairs(totals.http_statuses)))
        lines += ["", f"Queues ({len(self.queues)})"]
        queue_rows = [[q.name, _number(q.size), _age(q.latency)] for q in self.queues]
        lines += _table(["QUEUE", "SIZE", "LATENCY"], queue_rows, "lrr") if queue_rows else []
        lines.append(
            f"Retry {_number(self.retry_size)}  Scheduled {_number(self.scheduled_size)}"
            f"  Dead {_number(self.dead_size)}"
        )
        return "\n".join(_cut(line) for line in lines) + "\n"


@dataclass(frozen=True)
class InflightEntry:
    """One request in the gem's in-flight keys.

    The gem records no start time (every heartbeat overwrites the index score), so ``age``
    is measured from the job's ``enqueued_at`` (else ``created_at``), Sidekiq-unit-aware:
    the request has run at most that long (queue wait included). ``heartbeat_age`` is the
    time since the owner last refreshed the score, which is what the orphan sweep judges.
    ``request`` is ``"plain"`` (``http_method``/``url`` known), ``"encrypted"``,
    ``"stored"``, ``"missing"`` (no job recorded) or ``"?"`` (unreadable job).
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

    def to_json(self) -> dict[str, Any]:
        """Every field by name; times are epoch seconds, ages seconds."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def inflight_to_json(entries: Iterable[InflightEntry]) -> list[dict[str, Any]]:
    """The entries as JSON-ready dicts, in the given order."""
    return [entry.to_json() for entry in entries]


def render_inflight(entries: Sequence[InflightEntry]) -> str:
    """Four lines per request, in the given order (oldest first); fits 80 columns."""
    lines = [f"{len(entries)} in flight (oldest first)"]
    for e in entries:
        owner = "alive" if e.process_alive else "GONE"
        lines.append(_cut(f"{_age(e.age):>8}  {e.request_id}  beat {_age(e.heartbeat_age)} ago"))
        lines.append(_cut(f"          process {e.process_id} ({owner})"))
        job = f"{_shown(e.queue)}  jid {_shown(e.jid)}  callback {_shown(e.callback_name)}"
        lines.append(_cut(f"          {job}"))
        if e.request == "plain":
            target = f"{(e.http_method or '?').upper()} {_shown(e.url)}"
        else:
            target = e.request
        lines.append(_cut(f"          {target}"))
    return "\n".join(lines) + "\n"


# --- text helpers ---


def _process_row(p: ProcessStatus) -> list[str]:
    http = ["-", "-"]
    if p.http is not None:
        http = [f"{p.http.inflight:,}/{p.http.capacity:,}", f"{p.http.utilization:.1f}%"]
    if p.identity is None:
        return [p.name, "-", "-", "-", "-", "-", *http]
    quiet = {True: "yes", False: "no", None: "?"}[p.quiet]
    rss_mb = p.rss_kb // 1024 if p.rss_kb is not None else None
    return [p.name, _shown(p.tag), _number(p.busy), _number(p.concurrency), quiet,
            _number(rss_mb), *http]  # fmt: skip


def _shown(value: Any) -> str:
    return "?" if value is None else str(value)


def _number(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _age(seconds: float | None) -> str:
    """``0.4s``, ``12.3s``, ``5m03s``, ``2h04m``, ``3d02h``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if seconds < 60:
        return f"{sign}{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            return f"{sign}{whole // size}{unit}{whole % size // small_size:02d}{small}"
    return f"{sign}{whole // 60}m{whole % 60:02d}s"


def _pairs(counts: Mapping[str, int | None]) -> list[str]:
    return [f"{name} {_number(count)}" for name, count in counts.items()]


def _wrapped(label: str, items: list[str]) -> str:
    lines, line = [], label
    for item in items:
        if len(line) + 2 + len(item) > WIDTH and line.strip() != label.strip():
            lines.append(line.rstrip(","))
            line = " " * len(label)
        line += f" {item},"
    lines.append(line.rstrip(","))
    return "\n".join(lines)


def _cut(line: str) -> str:
    if "\n" in line:
        return "\n".join(_cut(part) for part in line.split("\n"))
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def _table(headers: list[str], rows: list[list[str]], align: str) -> list[str]:
    """Columns padded to their widest cell; the first column shrinks to fit ``WIDTH``."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    spare = WIDTH - 2 - sum(widths) - 2 * (len(widths) - 1)
    if spare < 0:
        widths[0] = max(len(headers[0]), widths[0] + spare)

    def line(cells: list[str]) -> str:
        out = []
        for cell, width, how in zip(cells, widths, align, strict=True):
            cell = cell if len(cell) <= width else cell[: width - 1] + "…"
            out.append(cell.ljust(width) if how == "l" else cell.rjust(width))
        return "  " + "  ".join(out).rstrip()

    return [line(headers), *(line(row) for row in rows)]
