"""Whether this worker process is healthy: what ``GET /health`` and the systemd watchdog ask.

Role: :class:`WorkerHealth` holds the process's state (starting, running, stopping) and the
Redis connections of its launchers, each registered by a :class:`HealthProbe` (a launcher
service, so it sees the connection the launcher's Sidekiq heartbeat uses). The process is
healthy when it is running and every such connection's last batch got its replies, less
than ``stale_after`` seconds ago (two heartbeat periods: the heartbeat alone writes every
10 s, the fetch loop about every second). A connection whose last batch failed makes the
process unhealthy at once, with Redis's error as the reason.

The check is passive: it reads :meth:`RedisBridge.answered_at` and ``last_failure`` and
sends nothing, so a probe hammering ``/health`` costs Redis nothing. Touches no Redis keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import trio

from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.heartbeat import BEAT_INTERVAL
from patient_sidekiq.sidekiq.launcher import Runtime

__all__ = ["STALE_AFTER", "HealthProbe", "HealthReport", "WorkerHealth"]

STALE_AFTER: Final = 2 * BEAT_INTERVAL
"""Seconds without a Redis answer after which a running process is unhealthy."""

State = Literal["starting", "running", "stopping"]


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One check's outcome: ``healthy``, why not (``reason``), and what ``/health`` shows."""

    healthy: bool
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``/health`` body: ``status`` ok/unavailable, ``reason`` when unavailable."""
        body: dict[str, Any] = {"status": "ok" if self.healthy else "unavailable"}
        if not self.healthy:
            body["reason"] = self.reason
        body.update(self.details)
        return body


class WorkerHealth:
    """The process's state and its launchers' Redis connections (see the module docstring).

    ``details`` adds fields to every report (in flight, capacity, quiet …); ``clock`` is
    trio's by default, the clock the bridges stamp their answers with.
    """

    def __init__(
        self,
        *,
        stale_after: float = STALE_AFTER,
        details: Callable[[], Mapping[str, Any]] = dict,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.stale_after = stale_after
        self.state: State = "starting"
        self._details = details
        self._clock = clock
        self._connections: dict[str, RedisBridge] = {}

    @property
    def connections(self) -> Mapping[str, RedisBridge]:
        """The watched connections by name (``requests``, ``callbacks``)."""
        return self._connections

    def watch(self, name: str, bridge: RedisBridge) -> None:
        """Judge Redis by ``bridge`` too (a launcher's connection)."""
        self._connections[name] = bridge

    def unwatch(self, name: str) -> None:
        """Stop judging by ``name``'s connection (its launcher has stopped)."""
        self._connections.pop(name, None)

    def running(self) -> None:
        """Every launcher is in the cluster (its first heartbeat is done)."""
        if self.state == "starting":
            self.state = "running"

    def stopping(self) -> None:
        """A stop was asked for: the process is on its way out."""
        self.state = "stopping"

    def check(self) -> HealthReport:
        """Judge the process now (no I/O)."""
        details = {"state": self.state, **self._details()}
        if self.state != "running":
            return HealthReport(False, self.state, details)
        if not self._connections:
            return HealthReport(False, "no launcher is running", details)
        now = self._clock()
        oldest: float | None = None
        for name, bridge in self._connections.items():
            answered, failure = bridge.answered_at, bridge.last_failure
            if failure is not None and (answered is None or failure[0] >= answered):
                return HealthReport(False, f"Redis unreachable ({name}): {failure[1]}", details)
            age = now - answered if answered is not None else None
            if age is None or age > self.stale_after:
                silent = "never" if age is None else f"not for {age:.0f} s"
                reason = f"Redis has answered {silent} ({name})"
                return HealthReport(False, reason, details)
            oldest = age if oldest is None else max(oldest, age)
        details["redis_answered_seconds_ago"] = round(oldest or 0.0, 3)
        return HealthReport(True, "", details)


class HealthProbe:
    """A launcher service that lends the launcher's Redis connection to :class:`WorkerHealth`.

    Services start after the launcher's first heartbeat and stop after its last job, so the
    connection is watched exactly while the launcher works.
    """

    def __init__(self, health: WorkerHealth, name: str) -> None:
        self._health = health
        self._name = name

    async def serve(self, runtime: Runtime, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Watch ``runtime.bridge`` until cancelled."""
        self._health.watch(self._name, runtime.bridge)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._health.unwatch(self._name)
