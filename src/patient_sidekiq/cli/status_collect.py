"""Reading the status reports from Redis (``patient-sidekiq status`` and ``inflight``).

Role: :func:`collect_status` gathers, in two pipelined round trips, the Sidekiq processes
(Ruby and Python alike) with the HTTP processor's in-flight count and capacity per process,
the gem's running totals, every queue's size and latency, and the retry/dead/scheduled
sizes. :func:`collect_inflight` lists the requests in flight, oldest first. Both return the
records of :mod:`patient_sidekiq.cli.status_report`, which renders them; Redis is never written.

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
from collections.abc import Mapping, Sequence
from typing import Any, Final

from patient_sidekiq import keys
from patient_sidekiq.cli.status_report import (
    HttpCapacity,
    HttpTotals,
    InflightEntry,
    ProcessStatus,
    QueueStatus,
    StatusReport,
    ruby_round,
)
from patient_sidekiq.errors import InvalidJsonError, RedisCommandError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import read_time
from patient_sidekiq.wire.encryption import is_envelope
from patient_sidekiq.wire.payload_store import is_reference
from patient_sidekiq.worker.inflight import process_of_task

__all__ = [
    "JOBS_PER_ROUND_TRIP",
    "collect_inflight",
    "collect_status",
    "host_pid",
]

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


def host_pid(process_id: str) -> str:
    """The Web tab's grouping key of a gem process id: its ``hostname:pid``."""
    return ":".join(process_id.split(":", 2)[:2])


def _sanitized_host(hostname: str) -> str:
    # The gem builds its process id from the hostname with ':' and '/' replaced.
    return hostname.replace(":", "-").replace("/", "-")


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
