"""What an operator sees of one worker process: ``/metrics``, ``/health`` and systemd.

Role: :class:`Operations` ties :mod:`~patient_sidekiq.worker.metrics`,
:mod:`~patient_sidekiq.worker.health`, :mod:`~patient_sidekiq.worker.health_server` and
:mod:`~patient_sidekiq.worker.systemd_notify` to the :class:`~patient_sidekiq.worker.runner.Runner`:

* with ``metrics_port`` set, an HTTP endpoint on ``metrics_host``; child ``i`` of
  ``--processes N`` listens on ``metrics_port + i`` (each process has its own counters and
  its own health). The port is bound when the Operations is built (by the Runner), so one
  that is taken stops the worker before it starts (a configuration error, exit 78) rather
  than letting it run unwatched;
* with ``NOTIFY_SOCKET`` set (``Type=notify``): ``READY=1`` once every launcher is in the
  cluster, ``WATCHDOG=1`` every ``WATCHDOG_USEC/2`` (at most 5 s apart) while healthy (or
  stopping: the drain may take ``shutdown_timeout``), ``STATUS=`` when the state changes,
  ``STOPPING=1`` when a stop begins. A child of ``--processes`` never notifies: systemd
  listens to the main process (the supervisor), and a child's ``STOPPING=1`` would read as
  the whole service stopping.

Touches no Redis keys (reads the connections' counters).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import trio

from patient_sidekiq.config.model import Config
from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.launcher import Launcher
from patient_sidekiq.worker.callback_worker import CallbackWorker
from patient_sidekiq.worker.counters import CallbackCounters
from patient_sidekiq.worker.health import HealthProbe, WorkerHealth
from patient_sidekiq.worker.health_server import OpsServer, Reply, bind
from patient_sidekiq.worker.metrics import CONTENT_TYPE, MetricSources, render, worker_registry
from patient_sidekiq.worker.request_log import RequestReport
from patient_sidekiq.worker.request_worker import RequestWorker
from patient_sidekiq.worker.systemd_notify import SystemdNotifier

__all__ = ["METRICS_MAX_AGE", "STATUS_INTERVAL", "Operations"]

log = logging.getLogger(__name__)

METRICS_MAX_AGE: Final = 1.0
"""Seconds one rendering of /metrics is served again (Prometheus scrapes every 15-60 s)."""
STATUS_INTERVAL: Final = 5.0
"""Longest gap between two looks at the health for systemd (STATUS=, WATCHDOG=1)."""


class Operations:
    """The metrics, health and systemd side of one worker process (module docstring).

    ``child_index``: this process's index under ``--processes`` (None when alone);
    ``notifier``: systemd's, from the environment by default.
    """

    def __init__(
        self,
        config: Config,
        *,
        child_index: int | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.child_index = child_index
        self.report = RequestReport(config.log_requests)
        self.callback_counters = CallbackCounters()
        self.health = WorkerHealth(details=self._details)
        self.sources = MetricSources(
            self.report.counters,
            self.callback_counters,
            capacity=config.max_connections,
            healthy=lambda: self.health.check().healthy,
            connections=self._connections,
        )
        self.port: int | None = None
        if config.metrics_port is not None:
            self.port = config.metrics_port + (child_index or 0)
        if notifier is None and child_index is None:
            notifier = SystemdNotifier.from_environ()
        self.notifier = notifier
        self._sockets: list[socket.socket] = []
        if self.port is not None:
            host = config.metrics_host
            try:
                self._sockets = bind(host, self.port)
            except OSError as exc:
                where = f"{host}:{self.port}"
                raise ConfigurationError(f"metrics_port: cannot listen on {where}: {exc}") from exc
        self.quiet: Callable[[], bool] = lambda: False
        self._extra_connections: dict[str, RedisBridge] = {}
        self._wake = trio.Event()
        self._stop_notified = False

    def probe(self, name: str) -> HealthProbe:
        """The health probe service for the launcher called ``name``."""
        return HealthProbe(self.health, name)

    def attach(
        self,
        request_worker: RequestWorker,
        callbacks: CallbackWorker,
        payloads_bridge: RedisBridge,
        launchers: Sequence[Launcher],
    ) -> None:
        """Read what the runner built: in-flight count, callback counters, the payloads
        connection's counters, and whether the ``launchers`` (read at each look) are quiet."""
        self.sources.in_flight = lambda: request_worker.in_flight
        self.sources.callbacks = callbacks.counters
        self._extra_connections["payloads"] = payloads_bridge
        self.quiet = lambda: any(launcher.quieting for launcher in launchers)

    # --- lifecycle, called by the runner ---

    @property
    def bound_port(self) -> int | None:
        """The port listened on (``metrics_port`` + index), or None."""
        return self._sockets[0].getsockname()[1] if self._sockets else None

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve ``/metrics`` and ``/health`` (when configured) and keep systemd informed,
        until cancelled."""
        async with trio.open_nursery() as nursery:
            if self._sockets:
                sockets, self._sockets = self._sockets, []
                port = sockets[0].getsockname()[1]
                await nursery.start(self._server().serve, sockets)
                host = self.config.metrics_host
                log.info("metrics and health on %s:%d (/metrics, /health)", host, port)
            task_status.started()
            if self.notifier is not None:
                await self._keep_systemd_informed(self.notifier)

    def ready(self) -> None:
        """Every launcher is in the cluster: healthy from now on, READY=1."""
        self.health.running()
        if self.notifier is not None:
            self.notifier.notify("READY=1", f"STATUS={self._status()}")
        self._wake.set()

    def stopping(self) -> None:
        """A stop began (TERM/INT, the Web UI, or the run ending): unhealthy, STOPPING=1."""
        self.health.stopping()
        if self.notifier is not None and not self._stop_notified:
            self._stop_notified = True
            self.notifier.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        """The run is over: say so to systemd if not yet, then close its socket."""
        self.stopping()
        if self.notifier is not None:
            self.notifier.close()
        for sock in self._sockets:  # never served (the run failed before)
            sock.close()
        self._sockets = []

    # --- internals ---

    def _server(self) -> OpsServer:
        registry = worker_registry(self.sources)
        cache: list[tuple[float, bytes]] = []

        def metrics() -> Reply:
            # A render costs ~0.6 ms of the loop: a client asking in a tight loop gets the
            # same text for a second instead of taking the worker's CPU.
            now = trio.current_time()
            if not cache or now - cache[0][0] >= METRICS_MAX_AGE:
                cache[:] = [(now, render(registry))]
            return 200, CONTENT_TYPE, cache[0][1]

        def health() -> Reply:
            report = self.health.check()
            body = json.dumps(report.to_json(), separators=(",", ":")).encode() + b"\n"
            return (200 if report.healthy else 503), "application/json", body

        return OpsServer({"/metrics": metrics, "/health": health})

    async def _keep_systemd_informed(self, notifier: SystemdNotifier) -> None:
        await self._wake.wait()  # READY=1 first
        interval = STATUS_INTERVAL
        if notifier.watchdog_interval is not None:
            interval = min(interval, notifier.watchdog_interval)
        last_status = ""
        while True:
            report = self.health.check()
            lines = []
            if notifier.watchdog_interval is not None and (
                report.healthy or self.health.state == "stopping"
            ):
                lines.append("WATCHDOG=1")
            status = self._status(report.reason if not report.healthy else "")
            if status != last_status:
                lines.append(f"STATUS={status}")
                last_status = status
            if lines:
                notifier.notify(*lines)
            await trio.sleep(interval)

    def _status(self, problem: str = "") -> str:
        state = self.health.state
        if state != "running":
            return state
        if problem:
            return f"unhealthy: {problem}"
        quiet = ", quiet" if self.quiet() else ""
        in_flight, capacity = self.sources.in_flight(), self.config.max_connections
        return f"running: {in_flight} of {capacity} requests in flight{quiet}"

    def _details(self) -> Mapping[str, Any]:
        return {
            "pid": os.getpid(),
            "in_flight": self.sources.in_flight(),
            "capacity": self.config.max_connections,
            "quiet": self.quiet(),
        }

    def _connections(self) -> Mapping[str, RedisBridge]:
        return {**self.health.connections, **self._extra_connections}
