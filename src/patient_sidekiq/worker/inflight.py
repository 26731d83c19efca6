"""The patient_http-sidekiq gem's in-flight monitor: crash recovery of running requests.

Wire spec §7. Every request a processor is running is recorded under
``<process id>/<request id>`` with a heartbeat score; every process announces itself with a
``max_connections`` key that expires unless refreshed. Whoever holds the sweep lock
re-enqueues (same jid) the requests of processes that are gone, so a request of a killed
worker, Ruby or Python, runs again.

Redis keys touched:

* ``sidekiq:patient_http:inflight_index`` (ZADD, ZADD XX, ZREM, ZRANGE BYSCORE, EXPIRE)
* ``sidekiq:patient_http:inflight_jobs`` (HSET, HDEL, HMGET, EXPIRE)
* ``sidekiq:patient_http:processes`` (SADD, SREM, SMEMBERS, EXPIRE)
* ``sidekiq:patient_http:processes:<process id>:max_connections`` (SET, EXPIRE, MGET, DEL)
* ``sidekiq:patient_http:gc_lock`` (SET NX EX, compare-and-delete)
* ``sidekiq:patient_http:gc_last_run`` (GET, SET PX)
* ``queues`` and ``queue:<name>`` (the re-enqueue, a normal Sidekiq push), ``dead`` (a
  reclaimed job whose text is not a job)

Compatibility fix: the gem's sweep treats every process id still in the processes set as
alive, and only its Web tab removes ids whose ``max_connections`` key has expired. Since
every live process refreshes the set's TTL, a killed process's requests are recovered only
once somebody opens that tab. :meth:`InflightMonitor.sweep` applies the tab's rule first
(prunes ids whose ``max_connections`` key is gone) and then looks for orphans, so recovery
works unattended while the keys stay exactly what the gem reads and writes.

Hand-off rule: a reclaimed task leaves both in-flight keys in the same Lua step that
pushes its job back, so at most one sweeper re-enqueues it, and a broken connection cannot
lose it between the removal and the push.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import InvalidJobError, RedisCommandError
from patient_sidekiq.redis_io.lua import LuaScript
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge, raise_first_error
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.job import DEFAULT_QUEUE, Job
from patient_sidekiq.sidekiq.poison import (
    CONTENT_ERRORS,
    content_error,
    dead_entry_commands,
    encode_raw,
)
from patient_sidekiq.sidekiq.retry import RetryPolicy

__all__ = [
    "InflightMonitor",
    "gem_process_id",
    "inflight_ttl",
    "process_of_task",
    "task_id",
]

log = logging.getLogger(__name__)

Command = tuple[Arg, ...]

HEARTBEAT_CHUNK: Final = 1000
"""Tasks per ``ZADD … XX`` command of a heartbeat (score/member pairs in one command)."""

_ANY_SCORE: Final = 2**53  # beyond every epoch-ms score: "whatever its last heartbeat"
_RECLAIM: Final = LuaScript("inflight_reclaim.lua", __package__)
_UNLOCK: Final = LuaScript("inflight_unlock.lua", __package__)
_HAND_OFF: Final = LuaScript("inflight_hand_off.lua", __package__)


def gem_process_id(hostname: str | None = None, pid: int | None = None) -> str:
    """Return a process id as the gem builds it: ``<hostname>:<pid>:<16 hex>``.

    ``:`` and ``/`` in the hostname become ``-`` so the id splits unambiguously.
    """
    host = socket.gethostname() if hostname is None else hostname
    host = host.replace(":", "-").replace("/", "-")
    return f"{host}:{os.getpid() if pid is None else pid}:{secrets.token_hex(8)}"


def task_id(process_id: str, request_id: str) -> str:
    """Return the member name of one request in the in-flight keys."""
    return f"{process_id}/{request_id}"


def process_of_task(task: str) -> str:
    """Return the process id part of a task id.

    Split at the FIRST ``/`` as the gem does: a process id never contains one (the hostname
    is sanitised), while nothing forbids one in a request id.
    """
    return task.split("/", 1)[0]


def inflight_ttl(orphan_threshold: float) -> int:
    """Return the TTL of the in-flight keys and the processes set: ``max(3 * threshold, 3600)``."""
    return max(math.ceil(3 * orphan_threshold), 3600)


def _text(value: Any) -> str:
    # surrogateescape, as the fetch does: a member or job that is not UTF-8 must still be
    # matched (ZSCORE, HGET) and removed by its exact bytes, or it is scanned forever.
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


class InflightMonitor:
    """Registers, heartbeats and recovers one process's in-flight requests (wire spec §7).

    ``clock`` returns epoch seconds (injectable for tests); ``client`` is used to build the
    re-enqueue push, so reclaimed jobs get the same ``enqueued_at`` stamping as any push.
    """

    def __init__(
        self,
        bridge: RedisBridge,
        client: SidekiqClient,
        *,
        process_id: str,
        max_connections: int,
        heartbeat_interval: float = 60.0,
        orphan_threshold: float = 300.0,
        clock: Callable[[], float] = time.time,
        dead_policy: RetryPolicy | None = None,
    ) -> None:
        """Use ``bridge`` (already entered); ``process_id`` comes from :func:`gem_process_id`."""
        if "/" in process_id:
            raise ValueError(f"process id must not contain '/': {process_id!r}")
        self._bridge = bridge
        self._client = client
        self.process_id = process_id
        self.max_connections = max_connections
        self.heartbeat_interval = heartbeat_interval
        self.orphan_threshold = orphan_threshold
        self._clock = clock
        self._dead_policy = dead_policy if dead_policy is not None else RetryPolicy()

    # --- derived values ---

    @property
    def max_connections_key(self) -> str:
        """This process's liveness marker key."""
        return keys.gem_process_max_connections(self.process_id)

    @property
    def inflight_ttl(self) -> int:
        """TTL (s) of the index, the jobs hash and the processes set."""
        return inflight_ttl(self.orphan_threshold)

    @property
    def process_ttl(self) -> int:
        """TTL (s) of the max_connections key: two heartbeat intervals, at least 1."""
        return max(1, math.ceil(2 * self.heartbeat_interval))

    @property
    def gc_lock_ttl(self) -> int:
        """TTL (s) of the sweep lock: ``max(2 * heartbeat_interval, 120)``."""
        return max(math.ceil(2 * self.heartbeat_interval), 120)

    @property
    def gc_last_run_ttl_ms(self) -> int:
        """TTL (ms) of the last-sweep marker: 1.5 heartbeat intervals."""
        return max(1, round(1.5 * self.heartbeat_interval * 1000))

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def task_id(self, request_id: str) -> str:
        """Return this process's task id of ``request_id``."""
        return task_id(self.process_id, request_id)

    # --- register / unregister ---

    def register_commands(self, request_id: str, job_raw: str) -> list[Command]:
        """Return the commands recording a started request, to run inside one MULTI.

        The caller may add its own commands (removing the job from its in-progress list)
        so the job moves from one recovery mechanism to the other in one step.
        """
        member = self.task_id(request_id)
        ttl = self.inflight_ttl
        return [
            ("ZADD", keys.INFLIGHT_INDEX, self._now_ms(), member),
            ("HSET", keys.INFLIGHT_JOBS, member, job_raw),
            ("EXPIRE", keys.INFLIGHT_INDEX, ttl),
            ("EXPIRE", keys.INFLIGHT_JOBS, ttl),
        ]

    async def hand_off(self, inprogress_key: str, request_id: str, job_raw: str | bytes) -> None:
        """Move a fetched job from its in-progress list into the in-flight keys (one step).

        Not interrupted by a cancellation: the caller always learns which record holds it.
        """
        await _HAND_OFF.run(
            self._bridge,
            [inprogress_key, keys.INFLIGHT_INDEX, keys.INFLIGHT_JOBS],
            [job_raw, self.task_id(request_id), self._now_ms(), self.inflight_ttl],
            shielded=True,
        )

    async def register(self, request_id: str, job_raw: str) -> None:
        """Record a started request (one MULTI)."""
        commands = self.register_commands(request_id, job_raw)
        raise_first_error(await self._bridge.transaction(commands))

    def unregister_commands(self, request_id: str) -> list[Command]:
        """Return the commands forgetting a finished request, to run inside one MULTI."""
        member = self.task_id(request_id)
        return [("ZREM", keys.INFLIGHT_INDEX, member), ("HDEL", keys.INFLIGHT_JOBS, member)]

    async def unregister(self, request_id: str) -> None:
        """Forget a finished request (one MULTI)."""
        raise_first_error(await self._bridge.transaction(self.unregister_commands(request_id)))

    # --- heartbeat ---

    def announce_commands(self) -> list[Command]:
        """Return the MULTI that announces this process and its max_connections."""
        return [
            ("SADD", keys.GEM_PROCESSES, self.process_id),
            ("SET", self.max_connections_key, self.max_connections),
            ("EXPIRE", keys.GEM_PROCESSES, self.inflight_ttl),
            ("EXPIRE", self.max_connections_key, self.process_ttl),
        ]

    async def heartbeat(self, request_ids: Iterable[str]) -> None:
        """Refresh the score of each running request, then re-announce this process.

        ``ZADD … XX`` only updates members that exist: a request already reclaimed by a
        sweeper is not brought back. Scores are refreshed before the announce so that a
        process coming back after being pruned never looks orphaned.
        """
        now = self._now_ms()
        members = [self.task_id(request_id) for request_id in request_ids]
        commands: list[Command] = []
        for first in range(0, len(members), HEARTBEAT_CHUNK):
            chunk = members[first : first + HEARTBEAT_CHUNK]
            pairs: list[Arg] = []
            for member in chunk:
                pairs += [now, member]
            commands.append(("ZADD", keys.INFLIGHT_INDEX, "XX", *pairs))
        if commands:
            raise_first_error(await self._bridge.pipeline(commands))
        raise_first_error(await self._bridge.transaction(self.announce_commands()))

    async def leave(self) -> None:
        """Remove this process from the processes set and delete its max_connections key."""
        raise_first_error(
            await self._bridge.transaction(
                [("SREM", keys.GEM_PROCESSES, self.process_id), ("DEL", self.max_connections_key)]
            )
        )

    # --- orphan sweep ---

    async def sweep(self) -> int:
        """Run the orphan sweep if it is due and the lock is free; return jobs re-enqueued.

        At most once per ``heartbeat_interval`` across every process (``gc_last_run``),
        under ``gc_lock``. Returns 0 without touching anything when skipped.
        """
        now_ms = self._now_ms()
        last = await self._bridge.execute("GET", keys.GC_LAST_RUN)
        if last is not None:
            try:
                last_ms = float(_text(last))
            except ValueError:
                last_ms = None
            if last_ms is not None and now_ms - last_ms < self.heartbeat_interval * 1000:
                return 0
        taken = await self._bridge.execute(
            "SET", keys.GC_LOCK, self.process_id, "NX", "EX", self.gc_lock_ttl
        )
        if taken is None:
            return 0
        try:
            await self.prune_processes()
            return await self._reclaim_orphans(now_ms)
        finally:
            with trio.CancelScope(shield=True):
                await self._bridge.execute(
                    "SET", keys.GC_LAST_RUN, now_ms, "PX", self.gc_last_run_ttl_ms
                )
                await _UNLOCK.run(self._bridge, [keys.GC_LOCK], [self.process_id])

    async def prune_processes(self) -> list[str]:
        """Remove process ids whose max_connections key has expired; return them.

        The rule of the gem's Web tab, applied before every sweep (the compatibility fix);
        this process itself is never pruned.
        """
        members = [_text(m) for m in await self._bridge.execute("SMEMBERS", keys.GEM_PROCESSES)]
        others = [m for m in members if m != self.process_id]
        if not others:
            return []
        values = await self._bridge.execute(
            "MGET", *(encode_raw(keys.gem_process_max_connections(m)) for m in others)
        )
        stale = [m for m, value in zip(others, values, strict=True) if value is None]
        if stale:
            await self._bridge.execute("SREM", keys.GEM_PROCESSES, *map(encode_raw, stale))
            log.info("pruned gone patient_http processes: %s", ", ".join(stale))
        return stale

    async def _reclaim_orphans(self, now_ms: int) -> int:
        threshold_ms = now_ms - round(self.orphan_threshold * 1000)
        candidates: list[bytes] = await self._bridge.execute(
            "ZRANGE", keys.INFLIGHT_INDEX, "-inf", threshold_ms, "BYSCORE"
        )
        if not candidates:
            return 0
        alive = {_text(m) for m in await self._bridge.execute("SMEMBERS", keys.GEM_PROCESSES)}
        alive.add(self.process_id)
        orphans = [m for m in candidates if process_of_task(_text(m)) not in alive]
        if not orphans:
            return 0
        return await self._reclaim_each(orphans, threshold_ms, own=False)

    async def _reclaim_each(self, members: list[bytes], threshold_ms: int, *, own: bool) -> int:
        """Reclaim each member through :meth:`_reclaim_one`; return how many were pushed.

        One member that fails must not block the others (nor every later pass): a job that
        cannot be pushed goes to dead inside ``_reclaim_one``; a Redis error reply is logged
        and the pass goes on.
        """
        payloads = await self._bridge.execute("HMGET", keys.INFLIGHT_JOBS, *members)
        count = 0
        for member, payload in zip(members, payloads, strict=True):
            try:
                if await self._reclaim_one(member, payload, threshold_ms, own=own):
                    count += 1
            except RedisCommandError:
                log.exception("failed to re-enqueue request %s", _text(member))
        return count

    async def reclaim_own(self, held: Callable[[], Collection[str]]) -> int:
        """Re-enqueue this LIVE process's tasks that it no longer runs; return how many.

        The sweep never looks at a live process's tasks, so a task left behind by a lost
        reply (a hand-off that ran although its caller saw a connection error, a shutdown
        re-enqueue or filing whose claim did not reach Redis) would stay until this process
        is gone. The keys are read first and ``held()`` (the task ids running now) after:
        a task runs from before its hand-off until after its claim, so one not held then
        has ended, and its record is a leftover. Each goes through the sweep's own Lua step
        (push, or dead when it cannot be pushed), which removes it only if its stored job is
        still the bytes read here; so a claim landing in between wins, and nothing is pushed
        twice.
        """
        prefix = f"{self.process_id}/"
        index, stored = raise_first_error(
            await self._bridge.pipeline(
                [("ZRANGE", keys.INFLIGHT_INDEX, 0, -1), ("HKEYS", keys.INFLIGHT_JOBS)]
            )
        )
        mine = {m for m in [*index, *stored] if _text(m).startswith(prefix)}
        if not mine:
            return 0
        running = set(held())
        left = sorted(m for m in mine if _text(m) not in running)
        if not left:
            return 0
        # Any score will do and no liveness check ("" process): these are our own tasks.
        return await self._reclaim_each(left, _ANY_SCORE, own=True)

    async def _reclaim_one(
        self, member: bytes, payload: bytes | None, threshold_ms: int, *, own: bool = False
    ) -> bool:
        """Push one orphan's job back (same jid), or move it to dead if it cannot be pushed.

        Every argument is the exact bytes read, so a member or job that is not UTF-8 is still
        found and removed (``surrogateescape`` throughout, as in the fetch).
        """
        name = _text(member)
        process = b"" if own else encode_raw(process_of_task(name))
        base_keys: list[Arg] = [keys.INFLIGHT_INDEX, keys.INFLIGHT_JOBS, keys.GEM_PROCESSES]
        base_args: list[Arg] = [member, threshold_ms, process]
        if payload is not None:
            error: tuple[str, str]
            try:
                job = Job.parse(_text(payload))
                if job.queue is None:
                    job = job.with_fields(queue=DEFAULT_QUEUE)  # Sidekiq's client default
                pushed, _ = self._client.push_commands(job)
            except InvalidJobError as exc:
                error = (exc.ruby_error_class, str(exc))
            except CONTENT_ERRORS as exc:  # e.g. a timeout of 1e400: infinity cannot be written
                error = content_error(exc)
            else:
                queue = pushed.queue
                assert queue is not None
                result = await _RECLAIM.run(
                    self._bridge,
                    [*base_keys, keys.QUEUES, keys.queue(queue)],
                    # payload: what the Lua step compares with the hash, byte for byte
                    [*base_args, payload, queue, pushed.raw],
                )
                if result == 1:
                    log.info(
                        "re-enqueued orphaned request %s (%s jid %s) to queue %s",
                        name,
                        job.class_name,
                        job.jid,
                        queue,
                    )
                    return True
                if result == -1:
                    log.warning("orphaned request %s changed while reclaiming; left", name)
                return False
            log.warning(
                "orphaned request %s cannot be re-enqueued (%s): burying it", name, error[1]
            )
            # Into dead in the same Lua step that takes the task out (never lost between),
            # with the error and the original bytes (poison.py); the trims follow.
            [add, *trims] = dead_entry_commands(
                _text(payload), *error, queue=DEFAULT_QUEUE, policy=self._dead_policy
            )
            result = await _RECLAIM.run(
                self._bridge, [*base_keys, keys.DEAD], [*base_args, payload, add[2], add[3]]
            )
            if result == 1:
                raise_first_error(await self._bridge.transaction(trims))
            elif result == -1:
                log.warning("orphaned request %s changed while burying; left", name)
            return False
        # No stored job: take the task out so it is not scanned forever.
        reply = await _RECLAIM.run(self._bridge, base_keys, base_args)
        if not reply or reply[0] != 1:
            return False
        raw = reply[1] if len(reply) > 1 else None
        if raw is None:
            log.warning("orphaned request %s had no stored job; removed", name)
            return False
        # A job stored since our read (rare): kept in dead rather than dropped.
        commands = dead_entry_commands(
            _text(raw),
            "JSON::ParserError",
            "the in-flight record had no job when the sweep read it",
            queue=DEFAULT_QUEUE,
            policy=self._dead_policy,
        )
        raise_first_error(await self._bridge.transaction(commands))
        return False
