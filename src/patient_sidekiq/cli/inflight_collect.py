"""Reading the requests in flight from Redis (``patient-sidekiq inflight``).

Role: :func:`collect_inflight` lists the gem's in-flight requests, oldest first, each with
its age, its URL (password and query values hidden: :func:`redacted_url`), its owning HTTP
processor, whether that processor is alive (its ``max_connections`` key exists, the gem's
rule) and the Sidekiq identity that runs it, as the Busy page and the worker's log name it.
Redis is never written; unreadable data becomes ``None`` or ``"?"``, never an exception.

Redis keys read: ``sidekiq:patient_http:inflight_index`` (ZRANGE), ``…:inflight_jobs``
(HMGET), ``sidekiq:patient_http:processes``, ``…:processes:<id>:max_connections`` (MGET),
``processes``, ``<identity>`` (HMGET).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

from patient_sidekiq import keys
from patient_sidekiq.cli.status_collect import (
    PROCESS_FIELDS,
    as_float,
    as_json_value,
    as_members,
    as_text,
    capacity_groups,
    host_pid,
    job_time,
    read_processes,
    reply_value,
    sanitized_host,
)
from patient_sidekiq.cli.status_report import REQUESTS_ROLE, InflightEntry, ProcessStatus
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.wire.encryption import is_envelope
from patient_sidekiq.wire.payload_store import is_reference
from patient_sidekiq.worker.inflight import process_of_task

__all__ = ["JOBS_PER_ROUND_TRIP", "collect_inflight", "redacted_url"]

JOBS_PER_ROUND_TRIP: Final = 1000
"""In-flight jobs fetched per HMGET round trip (a job can hold a 64 KiB request inline)."""


async def collect_inflight(
    bridge: RedisBridge, *, now: float | None = None, limit: int | None = None
) -> list[InflightEntry]:
    """List the requests in flight, oldest first (by job time, then heartbeat, then id).

    One round trip for the index and the two process sets, then one per
    :data:`JOBS_PER_ROUND_TRIP` jobs (the liveness keys and the process hashes, which name
    each owner's Sidekiq identity, ride along with the first).
    """
    now = time.time() if now is None else now
    index, members, sidekiq_members = await bridge.pipeline(
        [
            ("ZRANGE", keys.INFLIGHT_INDEX, 0, -1, "WITHSCORES"),
            ("SMEMBERS", keys.GEM_PROCESSES),
            ("SMEMBERS", keys.PROCESSES),
        ]
    )
    index = reply_value(index) if isinstance(reply_value(index), list) else []
    scores = {as_text(m) or "?": as_float(s) for m, s in zip(index[::2], index[1::2], strict=True)}
    tasks = list(scores)
    in_set = set(as_members(members))
    owners = sorted({process_of_task(t) for t in tasks} & in_set)
    identities = sorted(as_members(sidekiq_members)) if tasks else []
    max_connections: Any = []
    hashes: list[Any] = []
    jobs: list[Any] = []
    for first in range(0, max(len(tasks), 1), JOBS_PER_ROUND_TRIP):
        chunk = tasks[first : first + JOBS_PER_ROUND_TRIP]
        commands: list[tuple[Any, ...]] = [("HMGET", keys.INFLIGHT_JOBS, *chunk)] if chunk else []
        if first == 0:
            commands += [("HMGET", i, *PROCESS_FIELDS) for i in identities]
            if owners:
                commands.append(("MGET", *(keys.gem_process_max_connections(o) for o in owners)))
        replies = await bridge.pipeline(commands) if commands else []
        if chunk:
            got = reply_value(replies[0])
            jobs += got if isinstance(got, list) else [b"?"] * len(chunk)
        if first == 0:
            hashes = replies[1 : 1 + len(identities)]
            max_connections = reply_value(replies[-1]) if owners else []
    groups = capacity_groups(owners, max_connections, tasks)
    alive: set[str] = set()  # unreadable liveness keys: nobody counts as alive
    if isinstance(max_connections, list) and len(max_connections) == len(owners):
        alive = {o for o, v in zip(owners, max_connections, strict=True) if v is not None}
    named = _identities_by_host_pid(read_processes(identities, hashes, groups, now))
    entries = [
        _entry(task, scores[task], raw, process_of_task(task) in alive, now, named)
        for task, raw in zip(tasks, jobs, strict=True)
    ]
    entries.sort(key=lambda e: (_since(e), e.task_id))
    return entries if limit is None else entries[: max(limit, 0)]


def _identities_by_host_pid(processes: Sequence[ProcessStatus]) -> dict[str, str]:
    """The Sidekiq identity that runs each host:pid's HTTP processor (its owner first)."""
    named: dict[str, str] = {}
    for p in sorted(processes, key=lambda p: p.http is None):
        if p.identity is None or p.role not in (REQUESTS_ROLE, "ruby requests"):
            continue
        key = p.http.key if p.http is not None else f"{sanitized_host(p.hostname or '')}:{p.pid}"
        named.setdefault(key, p.identity)
    return named


def redacted_url(url: str) -> str:
    """``url`` without what may be a secret: the password and every query value."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        return "?"
    query = "&".join(
        f"{name}=…" if sep else name
        for name, sep, _ in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, ""))


def _since(entry: InflightEntry) -> float:
    if entry.enqueued_at is not None:
        return entry.enqueued_at
    return entry.heartbeat_at if entry.heartbeat_at is not None else math.inf


def _entry(
    task: str,
    score: float | None,
    raw: Any,
    alive: bool,
    now: float,
    named: Mapping[str, str],
) -> InflightEntry:
    process_id = process_of_task(task)
    heartbeat_at = score / 1000 if score is not None else None
    job = as_json_value(raw)
    queue = jid = callback = method = url = None
    enqueued_at: float | None = None
    if raw is None:
        request = "missing"
    elif not isinstance(job, dict):
        request = "?"
    else:
        queue = job.get("queue") if isinstance(job.get("queue"), str) else None
        jid = job.get("jid") if isinstance(job.get("jid"), str) else None
        enqueued_at = job_time(job)[1]
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
            url = redacted_url(data["url"]) if isinstance(data.get("url"), str) else None
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
        process_identity=named.get(host_pid(process_id)),
    )
