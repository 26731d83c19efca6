"""Reading the status report from Redis (``patient-sidekiq status``).

Role: :func:`collect_status` gathers, in two pipelined round trips, the Sidekiq processes
(Ruby and Python alike) with their role and liveness and the HTTP processor's in-flight count
and capacity, the gem's running totals, every queue's size and latency, and the
retry/dead/scheduled sizes, as the records of :mod:`patient_sidekiq.cli.status_report`; Redis
is never written. The readers here are shared with :mod:`patient_sidekiq.cli.inflight_collect`.

Roles: the two Sidekiq identities of one ``patient-sidekiq run`` carry the label
``requests`` or ``callbacks`` (a worker older than the labels: the identity whose concurrency
equals the HTTP capacity is the requests one); a Ruby process is ``ruby``, or ``ruby requests``
when it runs the gem's HTTP processor. The HTTP figures of a ``hostname:pid`` go to its
requests identity only.

In-flight and capacity follow the gem's Web tab (``TaskMonitor.inflight_counts_by_process``):
only gem process ids that are in the processes set AND still have their ``max_connections``
key count; they are grouped by ``hostname:pid``; a group's in-flight count is the number of
index members owned by its ids and its capacity the sum of their ``max_connections``. Unlike
the tab, reading never prunes the processes set (the orphan sweep does that).

Everything here tolerates foreign or broken data: a value that cannot be read becomes
``None`` (shown as ``?``), never an exception.

Redis keys read: ``processes``, ``<identity>`` (HMGET), ``queues``, ``queue:<name>`` (LLEN,
LINDEX -1), ``retry``, ``dead``, ``schedule`` (ZCARD), ``sidekiq:patient_http:processes``,
``…:processes:<id>:max_connections``, ``…:inflight_index``, ``…:totals`` (HGETALL).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from patient_sidekiq import keys
from patient_sidekiq.cli.status_report import (
    CALLBACKS_ROLE,
    FRESH_BEAT_SECONDS,
    REQUESTS_ROLE,
    HttpCapacity,
    HttpTotals,
    ProcessStatus,
    QueueStatus,
    StatusReport,
    ruby_round,
)
from patient_sidekiq.errors import InvalidJsonError, RedisCommandError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import read_time
from patient_sidekiq.worker.inflight import process_of_task

__all__ = [
    "PROCESS_FIELDS",
    "as_float",
    "as_json_value",
    "as_members",
    "as_text",
    "capacity_groups",
    "collect_status",
    "host_pid",
    "job_time",
    "read_processes",
    "reply_value",
    "sanitized_host",
]

PROCESS_FIELDS: Final = ("info", "concurrency", "busy", "beat", "quiet", "rss", "rtt_us")


# --- small readers: a Redis reply or a JSON value -> a Python value or None ---


def reply_value(reply: Any) -> Any:
    """The reply, or ``None`` for an error reply (WRONGTYPE on a foreign key …)."""
    return None if isinstance(reply, RedisCommandError) else reply


def as_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    text = as_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def as_float(value: Any) -> float | None:
    text = as_text(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        number = float(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def as_json_value(value: Any) -> Any:
    text = as_text(value)
    if text is None:
        return None
    try:
        return rubyjson.loads(text)
    except InvalidJsonError:
        return None


def as_members(reply: Any) -> list[str]:
    reply = reply_value(reply)
    if not isinstance(reply, list):
        return []
    return [text for text in (as_text(m) for m in reply) if text is not None]


def host_pid(process_id: str) -> str:
    """The Web tab's grouping key of a gem process id: its ``hostname:pid``."""
    return ":".join(process_id.split(":", 2)[:2])


def sanitized_host(hostname: str) -> str:
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
    identities = sorted(as_members(first[0]))
    gem_ids = sorted(as_members(first[1]))
    tasks = as_members(first[2])
    queue_names = sorted(as_members(first[4]))
    second: list[tuple[Any, ...]] = [("HMGET", i, *PROCESS_FIELDS) for i in identities]
    for name in queue_names:
        second += [("LLEN", keys.queue(name)), ("LINDEX", keys.queue(name), -1)]
    if gem_ids:
        second.append(("MGET", *(keys.gem_process_max_connections(p) for p in gem_ids)))
    replies = await bridge.pipeline(second) if second else []

    hashes = replies[: len(identities)]
    queue_replies = replies[len(identities) : len(identities) + 2 * len(queue_names)]
    max_connections = reply_value(replies[-1]) if gem_ids else []
    groups = capacity_groups(gem_ids, max_connections, tasks)
    processes = read_processes(identities, hashes, groups, now)
    queues = tuple(
        QueueStatus(name, _int(reply_value(size)), _latency(reply_value(oldest), now))
        for name, size, oldest in zip(
            queue_names, queue_replies[::2], queue_replies[1::2], strict=True
        )
    )
    return StatusReport(
        processes=processes,
        totals=_totals(reply_value(first[3])),
        queues=queues,
        retry_size=_int(reply_value(first[5])),
        dead_size=_int(reply_value(first[6])),
        scheduled_size=_int(reply_value(first[7])),
        inflight_total=sum(g.inflight for g in groups.values()),
        capacity_total=sum(g.capacity for g in groups.values()),
        inflight_registered=len(tasks) if isinstance(reply_value(first[2]), list) else None,
        generated_at=now,
    )


def capacity_groups(
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


def read_processes(
    identities: Sequence[str],
    hashes: Sequence[Any],
    groups: Mapping[str, HttpCapacity],
    now: float,
) -> tuple[ProcessStatus, ...]:
    rows: list[ProcessStatus] = []
    match_keys: list[str | None] = []
    for identity, reply in zip(identities, hashes, strict=True):
        values = reply_value(reply)
        if not isinstance(values, list) or values[0] is None:
            continue  # hash expired: Sidekiq's ProcessSet skips the member as well
        fields = dict(zip(PROCESS_FIELDS, values, strict=True))
        info = as_json_value(fields["info"])
        malformed = not isinstance(info, dict)
        info = info if isinstance(info, dict) else {}
        hostname = info.get("hostname") if isinstance(info.get("hostname"), str) else None
        pid = info.get("pid") if isinstance(info.get("pid"), int) else None
        if hostname is None or pid is None:
            parts = identity.rsplit(":", 2)
            match_key = f"{sanitized_host(parts[0])}:{parts[1]}" if len(parts) == 3 else None
        else:
            match_key = f"{sanitized_host(hostname)}:{pid}"
        match_keys.append(match_key)
        queues, labels = info.get("queues"), info.get("labels")
        quiet = as_text(fields["quiet"])
        concurrency = _int(fields["concurrency"])  # Sidekiq 8.1.2+ keeps it in the hash
        beat = as_float(fields["beat"])
        rows.append(
            ProcessStatus(
                identity=identity,
                hostname=hostname,
                pid=pid,
                tag=info.get("tag") if isinstance(info.get("tag"), str) else None,
                version=info.get("version") if isinstance(info.get("version"), str) else None,
                started_at=as_float(info.get("started_at")),
                concurrency=concurrency
                if concurrency is not None
                else _int(info.get("concurrency")),
                busy=_int(fields["busy"]),
                quiet=None if quiet is None else quiet == "true",
                beat=beat,
                rss_kb=_int(fields["rss"]),
                queues=_strings(queues),
                malformed=malformed,
                labels=_strings(labels),
                alive=None if beat is None else now - beat < FRESH_BEAT_SECONDS,
            )
        )
    # One owner per group (a duplicate hostname:pid would otherwise count twice): of the two
    # identities of one `patient-sidekiq run`, the requests one, never the callbacks one.
    owners: dict[int, HttpCapacity] = {}
    orphans: list[HttpCapacity] = []
    for key, group in groups.items():
        candidates = [i for i, match_key in enumerate(match_keys) if match_key == key]
        if candidates:
            owners[min(candidates, key=lambda i: (_http_preference(rows[i], group), i))] = group
        else:
            orphans.append(group)
    result = [
        replace(row, http=owners.get(i), role=_role(row, owners.get(i)))
        for i, row in enumerate(rows)
    ]
    # An HTTP processor counts only while its max_connections key lives: alive by the gem's rule.
    result += [ProcessStatus(identity=None, http=g, role="requests", alive=True) for g in orphans]
    return tuple(result)


def _strings(value: Any) -> tuple[str, ...] | None:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else None


def _http_preference(row: ProcessStatus, group: HttpCapacity) -> int:
    """Lower is likelier the identity that runs the host:pid's HTTP processor."""
    labels = row.labels or ()
    if REQUESTS_ROLE in labels:
        return 0
    if CALLBACKS_ROLE in labels:
        return 3
    # A worker older than the role labels: its requests launcher's concurrency is the capacity.
    return 1 if row.concurrency == group.capacity else 2


def _role(row: ProcessStatus, http: HttpCapacity | None) -> str | None:
    if row.patient_sidekiq:
        for role in (REQUESTS_ROLE, CALLBACKS_ROLE):
            if role in (row.labels or ()):
                return role
        return REQUESTS_ROLE if http is not None else CALLBACKS_ROLE
    if row.version is None:
        return REQUESTS_ROLE if http is not None else None
    return "ruby requests" if http is not None else "ruby"


def _totals(reply: Any) -> HttpTotals:
    if not isinstance(reply, list):
        return HttpTotals(None, None, None, None, None, None)
    fields = {as_text(k) or "": v for k, v in zip(reply[::2], reply[1::2], strict=True)}
    duration = as_float(fields["duration"]) if "duration" in fields else 0.0
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


def job_time(job: Mapping[str, Any]) -> tuple[bool, float | None]:
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
    job = as_json_value(oldest)
    if not isinstance(job, dict):
        return None
    present, at = job_time(job)
    if not present:
        return 0.0
    return now - at if at is not None else None
