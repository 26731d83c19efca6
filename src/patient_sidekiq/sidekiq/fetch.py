"""Reliable fetch: take jobs off Sidekiq queues without ever holding one only in memory.

Role: the worker's only way to get jobs. :class:`ReliableFetch` pops jobs in batches up to the
caller's free capacity, hands them out as :class:`UnitOfWork` records, and ends each one with
:meth:`~ReliableFetch.acknowledge` (done) or :meth:`~ReliableFetch.requeue` (give it back).
:meth:`~ReliableFetch.recover` returns the jobs of crashed processes to their queues.

Keys touched (all named by :mod:`patient_sidekiq.keys`):

* ``queue:<q>`` (Sidekiq's, shared with Ruby): RPOP'd by the pop script and BLMOVE, RPUSHed by
  requeue and recovery (right end = next to be popped, like Sidekiq's own requeue).
* ``patient_sidekiq:inprogress:<identity>:<q>``: this process's jobs from queue ``q``, newest
  at the left. Ours alone; Ruby never reads it.
* ``patient_sidekiq:inprogress`` (registry hash): in-progress list key -> JSON
  ``{"identity", "queue"}``, so recovery finds the lists without guessing queue names.
* ``<identity>``: another process's heartbeat hash; recovery only reads whether it EXISTS.

At-least-once: every job is always in exactly one of its queue list and one in-progress list.
Both moves between them are single atomic Redis steps (the Lua pop script, BLMOVE, the MULTI of
requeue, the Lua recovery script). :meth:`~ReliableFetch.acknowledge` removes a finished job. A
crash leaves the job in its in-progress list until another process, seeing the crashed
process's heartbeat hash expire, moves it back. A job may therefore run twice, never zero times.

Waiting when the queues are empty (see :meth:`ReliableFetch.wait_for_work`): a blocking pop over
several queues cannot also record the job in progress, and an abandoned blocking pop loses the
next job. So one waiter thread (a private ``CapacityLimiter(1)``, its own connection, never
abandoned) runs ``BLMOVE queue:<first> <its in-progress list> RIGHT LEFT t`` with t <= 1 s on
the first queue of the current order: atomic pop and record. A job arriving in another queue
is seen by the next :meth:`~ReliableFetch.fetch`, at most 1 s later; cancelling a wait takes at
most 1 s, and a job moved after the cancellation is requeued, not dropped.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final

import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import ConfigurationError, RedisCommandError, RedisUnavailableError
from patient_sidekiq.redis_io.lua import LuaScript
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge, raise_first_error
from patient_sidekiq.redis_io.redis_target import RedisTarget, as_target
from patient_sidekiq.sidekiq.unit_of_work import QueueOrder, UnitOfWork, decode_bytes

MAX_BLOCK_SECONDS: Final = 1.0
"""Longest single blocking wait: bounds shutdown latency and the latency of non-first queues."""

_INPROGRESS_PREFIX: Final = keys.inprogress("", "").removesuffix(":")
# Sidekiq identities are "<hostname>:<pid>:<hex nonce>"; the queue name follows.
_INPROGRESS_REST: Final = re.compile(r"(?P<identity>[^:]+:\d+:[0-9a-f]+):(?P<queue>.+)", re.S)


Holdings = Counter[tuple[str, bytes]]
"""(in-progress list key, exact job bytes) -> how many copies the process holds in memory."""


class InTransit:
    """The steps that record jobs in this process's in-progress lists before it holds them.

    A fetch (the pop script or BLMOVE, then the processor starting the jobs) and a poller
    round (park, then re-push) each run inside :meth:`step`. Between Redis recording a job
    and the process holding it there is a reply in flight; :meth:`settle` waits for every
    step open at the time it is called, so a reconcile that read the lists before that
    moment compares them with holdings that include what those steps brought in.
    """

    def __init__(self) -> None:
        self._next = 0
        self._open: set[int] = set()
        self._closed = trio.Event()

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Mark one pop-to-hold step; it ends when the jobs are held (or the step failed)."""
        number = self._next
        self._next += 1
        self._open.add(number)
        try:
            yield
        finally:
            self._open.discard(number)
            self._closed.set()
            self._closed = trio.Event()

    async def settle(self) -> None:
        """Return once every step open now has ended (each is bounded by a reply or 1 s wait)."""
        waiting = set(self._open)
        while waiting & self._open:
            await self._closed.wait()


class ReliableFetch:
    """Fetches jobs for one process ``identity`` with an in-progress record in Redis."""

    def __init__(
        self,
        bridge: RedisBridge,
        redis_url: str | RedisTarget,
        *,
        identity: str,
        queues: QueueOrder,
        batch_max: int = 500,
    ) -> None:
        if batch_max < 1:
            raise ConfigurationError(f"batch_max must be at least 1, not {batch_max}")
        self.identity = identity
        self.queues = queues
        self.batch_max = batch_max
        self._bridge = bridge
        # Per queue: queue key, in-progress key, registry value (computed once, used per fetch).
        self._lists = {
            name: (
                keys.queue(name),
                keys.inprogress(identity, name),
                json.dumps({"identity": identity, "queue": name}, separators=(",", ":")),
            )
            for name in queues.names
        }
        self._pop = LuaScript("fetch_pop.lua", __package__)
        self._recover = LuaScript("fetch_recover.lua", __package__)
        self._reclaim_own = LuaScript("fetch_reclaim_own.lua", __package__)
        # Blocking moves that failed with their outcome unknown (the waiter thread writes it;
        # the bridge counts its own): the launcher reconciles when either changes.
        self.lost_moves = 0
        # Seconds until the heartbeat of the first other process whose lists the last
        # recover() left (it was alive) expires; None when there was none.
        self.next_expiry: float | None = None
        # The blocking wait's own connection (the bridge refuses blocking commands). The socket
        # timeout must outlast a BLMOVE, or a move could happen with nobody reading its reply.
        self._waiter = as_target(redis_url).client(
            protocol=2, socket_timeout=MAX_BLOCK_SECONDS + 10
        )
        self._waiter_limiter = trio.CapacityLimiter(1)  # never trio's default limiter

    async def fetch(self, limit: int) -> list[UnitOfWork]:
        """Pop up to ``min(limit, batch_max)`` jobs without blocking, oldest first per queue.

        One EVALSHA (one bridge round trip). If the caller is cancelled meanwhile, the popped
        jobs are requeued before ``Cancelled`` propagates.
        """
        count = min(limit, self.batch_max)
        if count <= 0:
            await trio.lowlevel.checkpoint()
            return []
        order = self.queues.order()
        script_keys: list[Arg] = [keys.INPROGRESS_REGISTRY]
        args: list[Arg] = [count]
        for name in order:
            queue_key, inprogress_key, registration = self._lists[name]
            script_keys += (queue_key, inprogress_key)
            args.append(registration)
        with trio.CancelScope(shield=True):  # popped jobs must reach us, cancelled or not
            reply = await self._pop.run(self._bridge, script_keys, args)
        works: list[UnitOfWork] = []
        for index, jobs in zip(reply[::2], reply[1::2], strict=True):
            name = order[int(index) - 1]
            inprogress_key = self._lists[name][1]
            works += (UnitOfWork(name, decode_bytes(job), inprogress_key) for job in jobs)
        return await self._hand_over(works)

    async def wait_for_work(self, timeout: float) -> UnitOfWork | None:
        """Block up to ``min(timeout, 1 s)`` for a job on the first queue of the current order.

        Call it only after :meth:`fetch` returned nothing. Returns the job (already recorded
        in progress) or None. Cancellation waits for the BLMOVE to end (at most 1 s) and
        requeues a job it moved, so no job is lost.
        """
        seconds = min(timeout, MAX_BLOCK_SECONDS)
        if seconds < 0.001:  # BLMOVE's resolution; a timeout of 0 would block forever
            await trio.lowlevel.checkpoint()
            return None
        name = self.queues.order()[0]
        queue_key, inprogress_key, registration = self._lists[name]
        # Register the list BEFORE the move, so recovery can always find what the move records.
        with trio.CancelScope(shield=True):
            await self._bridge.execute(
                "HSET", keys.INPROGRESS_REGISTRY, inprogress_key, registration
            )
        raw = await trio.to_thread.run_sync(
            self._blocking_move,
            queue_key,
            inprogress_key,
            seconds,
            thread_name="patient-sidekiq-fetch-wait",
            abandon_on_cancel=False,  # an abandoned BLMOVE would still take the next job
            limiter=self._waiter_limiter,
        )
        if raw is None:
            return None
        works = await self._hand_over([UnitOfWork(name, decode_bytes(raw), inprogress_key)])
        return works[0]

    async def acknowledge(self, work: UnitOfWork) -> bool:
        """Forget a finished job; False if it was no longer in progress (already recovered)."""
        # -1: scan from the right, where the oldest jobs (usually finished first) are.
        removed = await self._bridge.execute(*work.acknowledge_command())
        return int(removed) > 0

    async def requeue(self, works: Sequence[UnitOfWork]) -> None:
        """Give jobs back: each leaves its in-progress list and goes to its queue's right end.

        One MULTI (atomic, one round trip) for all of them. ``works`` is taken oldest first:
        the first one becomes the next job popped from its queue.
        """
        commands: list[tuple[Arg, ...]] = []
        for work in reversed(works):
            commands += work.requeue_commands()
        raise_first_error(await self._bridge.transaction(commands))

    async def recover(self, is_alive: Callable[[str], Awaitable[bool]] | None = None) -> int:
        """Move the in-progress jobs of dead processes back to their queues; return how many.

        Candidates are the registry's lists plus any ``patient_sidekiq:inprogress:*`` list
        found by SCAN (in case a registry field was lost). A process counts as dead when
        ``is_alive`` says so (default: its heartbeat hash is gone); the script checks again,
        atomically, that the hash does not exist. Our own lists are never touched.
        """
        candidates = await self._registered_lists()
        for list_key, owner in (await self._scanned_lists()).items():
            candidates.setdefault(list_key, owner)
        others = {k: v for k, v in candidates.items() if v[0] != self.identity}
        self.next_expiry = None
        if not others:
            return 0
        identities = sorted({identity for identity, _ in others.values()})
        if is_alive is None:
            # PTTL rather than EXISTS: -2 is gone; otherwise it also says when the first live
            # owner's heartbeat runs out, so the next pass can come right then (next_expiry).
            replies = await self._bridge.pipeline([["PTTL", i] for i in identities])
            alive = {i for i, ms in zip(identities, replies, strict=True) if ms != -2}
            expiring = [int(ms) for ms in replies if isinstance(ms, int) and ms >= 0]
            self.next_expiry = min(expiring) / 1000 if expiring else None
        else:
            alive = {i for i in identities if await is_alive(i)}
        moved = 0
        for list_key, (identity, queue_name) in sorted(others.items()):
            if identity in alive:
                continue
            script_keys = [identity, list_key, keys.queue(queue_name), keys.INPROGRESS_REGISTRY]
            count = int(await self._recover.run(self._bridge, script_keys, ("dead",)))
            moved += max(count, 0)
        return moved

    async def reconcile_own(self, held: Callable[[], Holdings], transit: InTransit) -> int:
        """Give back what THIS live process's in-progress lists hold and it does not.

        A lost reply leaves such jobs behind: a pop or BLMOVE that ran although the caller saw
        a connection error, an acknowledgement that did not run, a hand-off whose outcome was
        unknown. Nobody else recovers them (the process is alive), so they would wait for
        its restart. The lists are read first; then the steps open at that moment are waited
        for (:class:`InTransit`), so everything they popped is held by then; then ``held()``
        is compared with the snapshot by exact bytes, copies counted. Each job left over goes
        back to its queue only if it is still in the list (``fetch_reclaim_own.lua``): one
        acknowledged in between is not run again. Returns how many jobs were moved.
        """
        candidates = await self._registered_lists()
        for list_key, owner in (await self._scanned_lists()).items():
            candidates.setdefault(list_key, owner)
        own = sorted((k, q) for k, (identity, q) in candidates.items() if identity == self.identity)
        if not own:
            return 0
        snapshots = raise_first_error(
            await self._bridge.pipeline([("LRANGE", key, 0, -1) for key, _ in own])
        )
        await transit.settle()
        holdings = held()
        moved = 0
        for (list_key, queue_name), jobs in zip(own, snapshots, strict=True):
            kept = Counter({raw: n for (key, raw), n in holdings.items() if key == list_key})
            extra: list[Arg] = []
            for raw in jobs:  # newest first, as in the list
                if kept[raw] > 0:
                    kept[raw] -= 1
                else:
                    extra.append(raw)
            if extra:
                script_keys = [list_key, keys.queue(queue_name)]
                moved += int(await self._reclaim_own.run(self._bridge, script_keys, extra))
        return moved

    async def release_own(self) -> int:
        """Move everything still in THIS process's in-progress lists back to its queues.

        The last step of a shutdown, once no job of ours is running: whatever is left (a job
        whose run was cancelled, one parked by the poller, one whose acknowledgement failed)
        runs again later rather than waiting for another process's recovery.
        """
        candidates = await self._registered_lists()
        for list_key, owner in (await self._scanned_lists()).items():
            candidates.setdefault(list_key, owner)
        moved = 0
        for list_key, (identity, queue_name) in sorted(candidates.items()):
            if identity != self.identity:
                continue
            script_keys = [identity, list_key, keys.queue(queue_name), keys.INPROGRESS_REGISTRY]
            moved += int(await self._recover.run(self._bridge, script_keys, ("force",)))
        return moved

    async def close(self) -> None:
        """Close the waiter's connection (after any running wait has ended)."""
        async with self._waiter_limiter:
            self._waiter.close()

    # --- helpers ---

    async def _hand_over(self, works: list[UnitOfWork]) -> list[UnitOfWork]:
        """Return ``works`` to the caller, or requeue them if the caller was cancelled."""
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            if works:
                with trio.CancelScope(shield=True):
                    await self.requeue(works)
            raise
        return works

    def _blocking_move(self, source: str, destination: str, seconds: float) -> bytes | None:
        """Run in the waiter thread: atomically move one job from ``source`` to ``destination``."""
        execute: Callable[..., bytes | None] = self._waiter.execute_command  # unannotated
        try:
            reply = execute("BLMOVE", source, destination, "RIGHT", "LEFT", f"{seconds:.3f}")
        except redis.ResponseError as exc:
            raise RedisCommandError(str(exc)) from exc
        except redis.RedisError as exc:
            # Outcome unknown: a moved job stays in our in-progress list, unheld, until this
            # process's next reconcile (reconcile_own) gives it back.
            self.lost_moves += 1
            raise RedisUnavailableError(f"blocking fetch failed: {exc}") from exc
        return reply

    async def _registered_lists(self) -> dict[str, tuple[str, str]]:
        flat = await self._bridge.execute("HGETALL", keys.INPROGRESS_REGISTRY)
        found: dict[str, tuple[str, str]] = {}
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            list_key = decode_bytes(field)
            try:
                entry = json.loads(value)
                owner = (str(entry["identity"]), str(entry["queue"]))
            except (ValueError, TypeError, KeyError):
                parsed = _parse_inprogress_key(list_key)
                if parsed is None:
                    continue
                owner = parsed
            if keys.inprogress(*owner) == list_key:  # never trust a field that names another key
                found[list_key] = owner
        return found

    async def _scanned_lists(self) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        cursor: bytes | str = "0"
        while True:
            cursor, batch = await self._bridge.execute(
                "SCAN", cursor, "MATCH", keys.inprogress("*", "*"), "COUNT", 1000
            )
            for key in batch:
                list_key = decode_bytes(key)
                parsed = _parse_inprogress_key(list_key)
                if parsed is not None:
                    found[list_key] = parsed
            if cursor in (b"0", "0"):
                return found


def _parse_inprogress_key(list_key: str) -> tuple[str, str] | None:
    """Split an in-progress list key into (identity, queue), or None if it is not one of ours."""
    if not list_key.startswith(_INPROGRESS_PREFIX):
        return None
    match = _INPROGRESS_REST.fullmatch(list_key[len(_INPROGRESS_PREFIX) :])
    if match is None:
        return None
    owner = (match["identity"], match["queue"])
    return owner if keys.inprogress(*owner) == list_key else None
