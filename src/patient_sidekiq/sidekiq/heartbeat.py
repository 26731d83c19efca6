"""Heartbeat: how a Sidekiq cluster sees this process (protocol spec §6).

Every beat flushes the processed/failed counters, rewrites the ``<identity>:work`` hash
(the jobs running now, shown on the Busy page; also as ``<identity>:workers`` for Sidekiq
6.4 and older), and in one MULTI re-announces the process
(``processes`` set, ``<identity>`` hash with a 60 s TTL) and pops one remote signal from
``<identity>-signals`` (``TSTP``, ``TERM``, ``TTIN``), which it returns to the caller.

Keys: ``processes``, ``<identity>``, ``<identity>:work`` and ``:workers``, ``<identity>-signals``,
``stat:processed``, ``stat:failed`` and their daily ``stat:*:YYYY-MM-DD`` keys, and (with
:class:`~patient_sidekiq.sidekiq.metrics.ExecutionMetrics`) Sidekiq 7's metrics keys.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from patient_sidekiq import keys
from patient_sidekiq._version import __version__
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.metrics import ExecutionMetrics

__all__ = ["BEAT_INTERVAL", "Heartbeat", "ProcessInfo", "WorkEntry", "make_identity"]

BEAT_INTERVAL: Final = 10.0
"""Seconds between beats, as Sidekiq 7 and 8 (the process hash lives 60 s)."""
PROCESS_TTL: Final = 60
STATS_TTL: Final = 5 * 365 * 24 * 3600  # Sidekiq keeps daily counters five years
SIGNALS: Final = frozenset({"TSTP", "TERM", "TTIN", "USR2", "INT"})


def make_identity(hostname: str | None = None, pid: int | None = None) -> str:
    """Return a Sidekiq process identity: ``host:pid:<12 hex>`` (``$DYNO`` wins as host)."""
    host = hostname or os.environ.get("DYNO") or socket.gethostname()
    return f"{host}:{pid if pid is not None else os.getpid()}:{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What the ``info`` field says about this process; computed once at startup.

    ``queues`` are ``(name, weight)`` pairs; all weights 0 means strict order.
    """

    identity: str
    concurrency: int
    queues: Sequence[tuple[str, int]]
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    tag: str = ""
    labels: Sequence[str] = ()
    version: str = f"patient-sidekiq {__version__}"

    def to_json(self) -> str:
        """Return the ``info`` JSON readable by Sidekiq 6.5, 7 and 8 Web UIs.

        ``concurrency`` is kept here for Sidekiq < 8.1.2 and also written as its own hash
        field for 8.1.2+; ``weights`` and ``capsules`` are what 7.x and 8.x show as queues.
        """
        weights = dict(self.queues)
        strict = all(weight == 0 for weight in weights.values())
        info = {
            "hostname": self.hostname,
            "started_at": float(self.started_at),
            "pid": self.pid,
            "tag": self.tag,
            "concurrency": self.concurrency,
            "queues": list(weights),
            "weights": [weights],
            "labels": list(self.labels),
            "identity": self.identity,
            "version": self.version,
            "embedded": False,
            "capsules": {
                "default": {
                    "concurrency": self.concurrency,
                    "mode": "strict" if strict else "weighted",
                    "weights": weights,
                }
            },
        }
        return rubyjson.dumps(info)


@dataclass(frozen=True, slots=True)
class WorkEntry:
    """One running job as the Busy page lists it."""

    queue: str
    payload: str
    run_at: int

    def to_json(self) -> str:
        """``{"queue", "payload" (the raw job text), "run_at" (epoch seconds)}``."""
        return rubyjson.dumps({"queue": self.queue, "payload": self.payload, "run_at": self.run_at})


def _rss_kb() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Heartbeat:
    """Announces this process to the cluster and collects remote signals.

    ``running`` returns the jobs in progress keyed by a unique work id; ``quiet`` tells
    whether the process stopped fetching. Counters are added with :meth:`count` and
    flushed on the next beat (kept if Redis is down, so none are lost).
    """

    def __init__(
        self,
        bridge: RedisBridge,
        info: ProcessInfo,
        *,
        running: Callable[[], Mapping[str, WorkEntry]],
        quiet: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        metrics: ExecutionMetrics | None = None,
    ) -> None:
        self._bridge = bridge
        self._info = info
        self._info_json = info.to_json()
        self._running = running
        self._quiet = quiet
        self._clock = clock
        self._processed = 0
        self._failed = 0
        self._left = False
        self.metrics = metrics
        """Sidekiq 7's execution metrics, flushed with the counters (None: not written)."""

    @property
    def identity(self) -> str:
        """This process's identity."""
        return self._info.identity

    def count(self, *, processed: int = 0, failed: int = 0) -> None:
        """Add to the processed/failed counters (every executed job is processed)."""
        self._processed += processed
        self._failed += failed

    async def beat(self) -> str | None:
        """Write one heartbeat; return the remote signal popped, if any."""
        await self._flush_stats()
        identity = self._info.identity
        running = self._running()
        work: list[tuple[Any, ...]] = []
        fields = [item for wid, entry in running.items() for item in (wid, entry.to_json())]
        # Sidekiq 6.5+ reads `<id>:work`, 6.4 and older `<id>:workers`: write both.
        for work_key in (keys.process_work(identity), keys.process_workers_legacy(identity)):
            work.append(("UNLINK", work_key))
            if fields:
                work += [("HSET", work_key, *fields), ("EXPIRE", work_key, PROCESS_TTL)]
        await self._bridge.transaction(work)

        started = time.monotonic()
        await self._bridge.execute("PING")
        rtt_us = int((time.monotonic() - started) * 1_000_000)

        # A beat still running when clear() was called must not put the process back: the
        # check and the SADD are in one synchronous step, and the bridge keeps their order.
        if self._left:
            return None
        replies = await self._bridge.transaction(
            [
                ("SADD", keys.PROCESSES, identity),
                ("EXISTS", identity),
                (
                    "HSET", identity,
                    "info", self._info_json,
                    "busy", len(running),
                    "beat", rubyjson.ruby_float_repr(self._clock()),
                    "quiet", "true" if self._quiet() else "false",
                    "rtt_us", rtt_us,
                    "rss", _rss_kb(),
                    "concurrency", self._info.concurrency,
                ),
                ("EXPIRE", identity, PROCESS_TTL),
                ("RPOP", keys.process_signals(identity)),
            ]
        )  # fmt: skip
        signal = replies[-1]
        if isinstance(signal, bytes):
            name = signal.decode("ascii", "replace")
            return name if name in SIGNALS else None
        return None

    async def _flush_stats(self) -> None:
        processed, failed = self._processed, self._failed
        if not processed and not failed:
            return
        self._processed = self._failed = 0
        now = datetime.fromtimestamp(self._clock(), UTC)
        day = now.strftime("%Y-%m-%d")
        commands: list[tuple[Any, ...]] = []
        for counter, amount in ((keys.STAT_PROCESSED, processed), (keys.STAT_FAILED, failed)):
            daily = keys.daily_stat(counter, day)
            commands += [
                ("INCRBY", counter, amount),
                ("INCRBY", daily, amount),
                ("EXPIRE", daily, STATS_TTL),
            ]
        metrics = self.metrics.take_commands(now) if self.metrics is not None else []
        try:
            await self._bridge.transaction([*commands, *metrics])
        except BaseException:
            # Keep the counts for the next beat rather than lose them.
            self.count(processed=processed, failed=failed)
            if self.metrics is not None:
                self.metrics.restore(metrics)
            raise

    async def clear(self) -> None:
        """Leave the cluster: out of ``processes``, running jobs unlisted."""
        identity = self._info.identity
        self._left = True
        await self._flush_stats()
        await self._bridge.pipeline(
            [
                ("SREM", keys.PROCESSES, identity),
                ("UNLINK", keys.process_work(identity)),
                ("UNLINK", keys.process_workers_legacy(identity)),
            ]
        )
