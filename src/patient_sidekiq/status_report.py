"""What ``patient-sidekiq status`` and ``patient-sidekiq inflight`` show: read-only reports.

:func:`collect_status` gathers, in two pipelined round trips, the Sidekiq processes (Ruby
and Python alike) with the HTTP processor's in-flight count and capacity per process, the
gem's running totals, every queue's size and latency, and the retry/dead/scheduled sizes.
:func:`collect_inflight` lists the requests in flight, oldest first.

In-flight and capacity follow the gem's Web tab (``TaskMonitor.inflight_counts_by_process``):
only gem process ids that are in the processes set AND still have their ``max_connections``
key count; they are grouped by ``hostname:pid``; a group's in-flight count is the number of
index members owned by its ids and its capacity the sum of their ``max_connections``. Unlike
the tab, reading never prunes the processes set (the orphan sweep does that).

Everything here tolerates foreign or broken data: a value that cannot be read becomes
``None`` (shown as ``?``), never an exception.

Redis keys read: ``processes``, ``<identity>`` (HMGET), ``queues``, ``queue:<name>`` (LLEN,
LINDEX -1), ``retry``, ``dead``, ``schedule`` (ZCARD), ``sidekiq:patient_http:processes``,
``…:processes:<id>:max_connections``, ``…:inflight_index``, ``…:inflight_jobs`` (HMGET),
``…:totals`` (HGETALL).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from . import keys, rubyjson
from .encryption import is_envelope
from .errors import InvalidJsonError, RedisCommandError
from .inflight import process_of_task
from .job import read_time
from .payload_store import is_reference
from .redis_bridge import RedisBridge

__all__ = [
    "HttpCapacity",
    "HttpTotals",
    "InflightEntry",
    "ProcessStatus",
    "QueueStatus",
    "StatusReport",
    "collect_inflight",
    "collect_status",
    "inflight_to_json",
    "render_inflight",
    "ruby_round",
    "utilization",
]

WIDTH: Final = 80
JOBS_PER_ROUND_TRIP: Final = 1000
"""In-flight jobs fetched per HMGET round trip (a job can hold a 64 KiB request inline)."""
_PROCESS_FIELDS: Final = ("info", "concurrency", "busy", "beat", "quiet", "rss", "rtt_us")


# --- small readers: a Redis reply or a JSON value -> a Python value or None ---


def _ok(reply: Any) -> Any:
    """The reply, or ``None`` for an error reply (WRONGTYPE on a foreign key …)."""
    return None if isinstance(reply, RedisCommandError) else reply


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    text = _text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    text = _text(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        number = float(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _json(value: Any) -> Any:
    text = _text(value)
    if text is None:
        return None
    try:
        return rubyjson.loads(text)
    except InvalidJsonError:
        return None


def _members(reply: Any) -> list[str]:
    reply = _ok(reply)
    if not isinstance(reply, list):
        return []
    return [text for text in (_text(m) for m in reply) if text is not None]


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


def host_pid(process_id: str) -> str:
    """The Web tab's grouping key of a gem process id: its ``hostname:pid``."""
    return ":".join(process_id.split(":", 2)[:2])


def _sanitized_host(hostname: str) -> str:
    # The gem builds its process id from the hostname with ':' and '/' replaced.
    return hostname.replace(":", "-").replace("/", "-")


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


# --- collection ---


async def collect_status(bridge: RedisBridge, *, now: float | None = None) -> StatusReport:
    """Read the whole status in two pipelined round trips (Redis is never written)."""
    now = time.time() if now is None else now
    first = await bridge.pipeline(
        [
            ("SMEMBERS", keys.PROCESSES),
            ("SMEMBERS", keys.GEM_PROCESSES),
            ("ZRANGE", keys.INFLIGHT_INDEX, 0, -1),
            ("HGETALL", keys.TOTALS),
            ("SMEMBERS", keys.QUEUES),
            ("ZCARD", keys.RETRY),
            ("ZCARD", keys.DEAD),
            ("ZCARD", keys.SCHEDULE),
        ]
    )
    identities = sorted(_members(first[0]))
    gem_ids = sorted(_members(first[1]))
    tasks = _members(first[2])
    queue_names = sorted(_members(first[4]))
    second: list[tuple[Any, ...]] = [("HMGET", i, *_PROCESS_FIELDS) for i in identities]
    for name in queue_names:
        second += [("LLEN", keys.queue(name)), ("LINDEX", keys.queue(name), -1)]
    if gem_ids:
        second.append(("MGET", *(keys.gem_process_max_connections(p) for p in gem_ids)))
    replies = await bridge.pipeline(second) if second else []

    hashes = replies[: len(identities)]
    queue_replies = replies[len(identities) : len(identities) + 2 * len(queue_names)]
    max_connections = _ok(replies[-1]) if gem_ids else []
    groups = _capacity_groups(gem_ids, max_connections, tasks)
    processes = _processes(identities, hashes, groups)
    queues = tuple(
        QueueStatus(name, _int(_ok(size)), _latency(_ok(oldest), now))
        for name, size, oldest in zip(
            queue_names, queue_replies[::2], queue_replies[1::2], strict=True
        )
    )
    return StatusReport(
        processes=processes,
        totals=_totals(_ok(first[3])),
        queues=queues,
        retry_size=_int(_ok(first[5])),
        dead_size=_int(_ok(first[6])),
        scheduled_size=_int(_ok(first[7])),
        inflight_total=sum(g.inflight for g in groups.values()),
        capacity_total=sum(g.capacity for g in groups.values()),
        inflight_registered=len(tasks) if isinstance(_ok(first[2]), list) else None,
        generated_at=now,
    )


def _capacity_groups(
    gem_ids: Sequence[str], max_connections: Any, tasks: Sequence[str]
) -> dict[str, HttpCapacity]:
    """The Web tab's ``inflight_counts_by_process``, without its pruning side effect."""
    if not isinstance(max_connections, list) or len(max_connections) != len(gem_ids):
        max_connections = [None] * len(gem_ids)  # unreadable: nobody counts as alive
    per_process: dict[str, int] = {}
    for task in tasks:
        owner = process_of_task(task)
        per_process[owner] = per_process.get(owner, 0) + 1
    groups: dict[str, HttpCapacity] = {}
    for process_id, value in zip(gem_ids, max_connections, strict=True):
        if value is None:
            continue  # the max_connections key expired: the tab treats the process as gone
        key = host_pid(process_id)
        old = groups.get(key, HttpCapacity(key, 0, 0))
        # Ruby's String#to_i reads garbage as 0; so does the capacity here.
        groups[key] = HttpCapacity(
            key,
            old.inflight + per_process.get(process_id, 0),
            old.capacity + (_int(value) or 0),
        )
    return groups


def _processes(
    identities: Sequence[str], hashes: Sequence[Any], groups: Mapping[str, HttpCapacity]
) -> tuple[ProcessStatus, ...]:
    unmatched = dict(groups)
    result: list[ProcessStatus] = []
    for identity, reply in zip(identities, hashes, strict=True):
        values = _ok(reply)
        if not isinstance(values, list) or values[0] is None:
            continue  # hash expired: Sidekiq's ProcessSet skips the member as well
        fields = dict(zip(_PROCESS_FIELDS, values, strict=True))
        info = _json(fields["info"])
        malformed = not isinstance(info, dict)
        info = info if isinstance(info, dict) else {}
        hostname = info.get("hostname") if isinstance(info.get("hostname"), str) else None
        pid = info.get("pid") if isinstance(info.get("pid"), int) else None
        if hostname is None or pid is None:
            parts = identity.rsplit(":", 2)
            match_key = f"{_sanitized_host(parts[0])}:{parts[1]}" if len(parts) == 3 else None
        else:
            match_key = f"{_sanitized_host(hostname)}:{pid}"
        # One row per group: a duplicate hostname:pid would otherwise count twice.
        http = unmatched.pop(match_key, None) if match_key is not None else None
        queues = info.get("queues")
        quiet = _text(fields["quiet"])
        concurrency = _int(fields["concurrency"])  # Sidekiq 8.1.2+ keeps it in the hash
        result.append(
            ProcessStatus(
                identity=identity,
                hostname=hostname,
                pid=pid,
                tag=info.get("tag") if isinstance(info.get("tag"), str) else None,
                version=info.get("version") if isinstance(info.get("version"), str) else None,
                started_at=_float(info.get("started_at")),
                concurrency=concurrency
                if concurrency is not None
                else _int(info.get("concurrency")),
                busy=_int(fields["busy"]),
                quiet=None if quiet is None else quiet == "true",
                beat=_float(fields["beat"]),
                rss_kb=_int(fields["rss"]),
                queues=tuple(q for q in queues if isinstance(q, str))
                if isinstance(queues, list)
                else None,
                malformed=malformed,
                http=http,
            )
        )
    result += [ProcessStatus(identity=None, http=group) for group in unmatched.values()]
    return tuple(result)


def _totals(reply: Any) -> HttpTotals:
    if not isinstance(reply, list):
        return HttpTotals(None, None, None, None, None, None)
    fields = {_text(k) or "": v for k, v in zip(reply[::2], reply[1::2], strict=True)}
    duration = _float(fields["duration"]) if "duration" in fields else 0.0
    statuses = {
        name.removeprefix("http_status:"): _int(value)
        for name, value in fields.items()
        if name.startswith("http_status:")
    }
    errors = {
        name.removeprefix("errors:"): _int(value)
        for name, value in fields.items()
        if name.startswith("errors:")
    }
    return HttpTotals(
        requests=_int(fields["requests"]) if "requests" in fields else 0,
        duration=ruby_round(duration, 6) if duration is not None else None,
        errors=_int(fields["errors"]) if "errors" in fields else 0,
        max_capacity_exceeded=(
            _int(fields["max_capacity_exceeded"]) if "max_capacity_exceeded" in fields else 0
        ),
        errors_by_type=dict(sorted(errors.items())),
        http_statuses=dict(sorted(statuses.items(), key=lambda kv: (len(kv[0]), kv[0]))),
    )


def _job_time(job: Mapping[str, Any]) -> tuple[bool, float | None]:
    """(has a timestamp, epoch seconds): ``enqueued_at`` else ``created_at``, as Sidekiq.

    Float means seconds and integer milliseconds (Sidekiq 8's rule; 7.x wrote only floats).
    """
    value = job.get("enqueued_at")
    if value is None or value is False:
        value = job.get("created_at")
    if value is None or value is False:
        return False, None
    return True, read_time(value)


def _latency(oldest: Any, now: float) -> float | None:
    """Sidekiq's ``Queue#latency``: 0.0 for an empty queue or a job without timestamps."""
    if oldest is None:
        return 0.0
    job = _json(oldest)
    if not isinstance(job, dict):
        return None
    present, at = _job_time(job)
    if not present:
        return 0.0
    return now - at if at is not None else None


# --- in-flight listing ---


async def collect_inflight(
    bridge: RedisBridge, *, now: float | None = None, limit: int | None = None
) -> list[InflightEntry]:
    """List the requests in flight, oldest first (by job time, then heartbeat, then id).

    One round trip for the index and the processes set, then one per
    :data:`JOBS_PER_ROUND_TRIP` jobs (the liveness keys ride along with the first).
    """
    now = time.time() if now is None else now
    index, members = await bridge.pipeline(
        [("ZRANGE", keys.INFLIGHT_INDEX, 0, -1, "WITHSCORES"), ("SMEMBERS", keys.GEM_PROCESSES)]
    )
    index = _ok(index) if isinstance(_ok(index), list) else []
    scores = {_text(m) or "?": _float(s) for m, s in zip(index[::2], index[1::2], strict=True)}
    tasks = list(scores)
    in_set = set(_members(members))
    owners = sorted({process_of_task(t) for t in tasks} & in_set)
    alive: set[str] = set()
    jobs: list[Any] = []
    for first in range(0, max(len(tasks), 1), JOBS_PER_ROUND_TRIP):
        chunk = tasks[first : first + JOBS_PER_ROUND_TRIP]
        commands: list[tuple[Any, ...]] = [("HMGET", keys.INFLIGHT_JOBS, *chunk)] if chunk else []
        if first == 0 and owners:
            commands.append(("MGET", *(keys.gem_process_max_connections(o) for o in owners)))
        replies = await bridge.pipeline(commands) if commands else []
        if chunk:
            got = _ok(replies[0])
            jobs += got if isinstance(got, list) else [b"?"] * len(chunk)
        if first == 0 and owners:
            values = _ok(replies[-1])
            if isinstance(values, list):
                alive = {o for o, v in zip(owners, values, strict=True) if v is not None}
    entries = [
        _entry(task, scores[task], raw, process_of_task(task) in alive, now)
        for task, raw in zip(tasks, jobs, strict=True)
    ]
    entries.sort(key=lambda e: (_since(e), e.task_id))
    return entries if limit is None else entries[: max(limit, 0)]


def _since(entry: InflightEntry) -> float:
    if entry.enqueued_at is not None:
        return entry.enqueued_at
    return entry.heartbeat_at if entry.heartbeat_at is not None else math.inf


def _entry(task: str, score: float | None, raw: Any, alive: bool, now: float) -> InflightEntry:
    process_id = process_of_task(task)
    heartbeat_at = score / 1000 if score is not None else None
    job = _json(raw)
    queue = jid = callback = method = url = None
    enqueued_at: float | None = None
    if raw is None:
        request = "missing"
    elif not isinstance(job, dict):
        request = "?"
    else:
        queue = job.get("queue") if isinstance(job.get("queue"), str) else None
        jid = job.get("jid") if isinstance(job.get("jid"), str) else None
        enqueued_at = _job_time(job)[1]
        args = job.get("args")
        args = args if isinstance(args, list) else []
        callback = args[1] if len(args) > 1 and isinstance(args[1], str) else None
        data = args[0] if args else None
        # Order matters: a stored payload may hold an envelope, never the other way round.
        if is_reference(data):
            request = "stored"
        elif is_envelope(data):
            request = "encrypted"
        elif isinstance(data, dict):
            request = "plain"
            method = data.get("http_method") if isinstance(data.get("http_method"), str) else None
            url = data.get("url") if isinstance(data.get("url"), str) else None
        else:
            request = "?"
    return InflightEntry(
        task_id=task,
        request_id=task.split("/", 1)[1] if "/" in task else "?",
        process_id=process_id,
        process_alive=alive,
        heartbeat_at=heartbeat_at,
        heartbeat_age=now - heartbeat_at if heartbeat_at is not None else None,
        enqueued_at=enqueued_at,
        age=now - enqueued_at if enqueued_at is not None else None,
        queue=queue,
        jid=jid,
        callback_name=callback,
        request=request,
        http_method=method,
        url=url,
    )


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
