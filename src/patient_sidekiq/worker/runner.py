"""One ``patient-sidekiq run`` process: builds every part from a :class:`Config` and runs it.

What runs, in one trio loop:

* the **HTTP launcher** — a Sidekiq process polling the request queues (default
  ``patient_http``) with the HTTP processor (:class:`RequestWorker`) as its service and
  ``concurrency = max_connections``. It also handles ``CallbackWorker`` jobs that land on
  those queues (a Ruby app that routes both gem workers to one queue puts them there): Python
  callbacks run, others move to the Ruby callback queue.
* the **callbacks launcher**, only when Python callbacks are registered — a second Sidekiq
  process (its own identity, so the Busy page shows it) polling the Python callback queue
  with ``callback_concurrency`` slots. Keeping it separate means a burst of callbacks never
  takes a slot the HTTP processor counts as capacity.

Signals (OS or from the Web UI, to either launcher) reach both launchers: TSTP quiets,
TERM/INT stop, TTIN dumps. When one launcher ends, the other is stopped too.

Redis keys: those of the launchers and services it starts (see ARCHITECTURE.md); payload
stores use their own connection, opened first and closed last, because request payloads
must stay readable until the last in-flight request is delivered.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import trio

from patient_sidekiq._version import __version__
from patient_sidekiq.config.model import Config
from patient_sidekiq.errors import ConfigurationError, RedisUnavailableError
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.redis_io.outage import RedisOutage
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.registry.callbacks import registry as default_registry
from patient_sidekiq.registry.encryption_hooks import encryption_hooks
from patient_sidekiq.registry.hooks import Hooks, default_hooks
from patient_sidekiq.registry.registrations import (
    build_preprocessors,
    build_secrets,
    preprocessors,
    secrets,
)
from patient_sidekiq.sidekiq.heartbeat import make_identity
from patient_sidekiq.sidekiq.launcher import Launcher
from patient_sidekiq.sidekiq.processor import Dispatcher
from patient_sidekiq.worker.callback_directory import CallbackDirectory
from patient_sidekiq.worker.callback_worker import CallbackWorker, CallbackWorkerSettings
from patient_sidekiq.worker.operations import Operations
from patient_sidekiq.worker.request_call import CallbackRouting, RequestWorkerSettings
from patient_sidekiq.worker.request_worker import RequestWorker
from patient_sidekiq.worker.supervisor import child_index

__all__ = [
    "CALLBACKS_ROLE",
    "REQUESTS_ROLE",
    "Runner",
    "load_requires",
    "raise_open_files_limit",
    "settle_gc",
]

log = logging.getLogger(__name__)

# The two Sidekiq identities of one run carry their role as a Sidekiq label: the Busy page
# shows it, the "started" log line names it, and `patient-sidekiq status` tells them apart.
REQUESTS_ROLE: Final = "requests"
CALLBACKS_ROLE: Final = "callbacks"

_SIGNALS: Final = {
    signal.SIGTERM: "TERM",
    signal.SIGINT: "INT",
    signal.SIGTSTP: "TSTP",
    signal.SIGTTIN: "TTIN",
}


def load_requires(names: Sequence[str]) -> None:
    """Import the user's modules (``-r``): a dotted module name, or a ``.py`` file path.

    The working directory is importable first, as Sidekiq's ``-r`` resolves paths against it.
    Any failure becomes one :class:`ConfigurationError` line per module.
    """
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    problems: list[str] = []
    for name in names:
        try:
            if name.endswith(".py") or os.sep in name:
                _load_file(Path(name).resolve())
            else:
                importlib.import_module(name)
        except Exception as exc:  # the user's import may raise anything
            problems.append(f"require: cannot load {name!r}: {type(exc).__name__}: {exc}")
    if problems:
        raise ConfigurationError("\n".join(problems))


def _load_file(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ImportError(f"no such file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)


_SPARE_FILES: Final = 256
"""Descriptors beside the HTTP connections: Redis, logs, the wake-up pipes, listeners."""


def raise_open_files_limit(max_connections: int) -> int:
    """Raise the soft open-files limit to the hard one; return the limit now in force.

    Every connection in flight holds a descriptor, and Debian's default soft limit (1,024)
    would fail a fan-out with EMFILE long before ``max_connections``. Only root can raise
    the hard limit, so when it is still too low this says what to set.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    needed = max_connections + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-files limit %d is below max_connections %d + %d: requests beyond it fail "
            "with Errno::EMFILE; raise the hard limit to at least %d (ulimit -Hn as root, "
            "LimitNOFILE= in a systemd unit, docker run --ulimit nofile=)",
            soft, max_connections, _SPARE_FILES, needed,
        )  # fmt: skip
    return int(soft)


GC_THRESHOLDS: Final = (10_000, 10, 10)
"""CPython's defaults (700, 10, 10) with a young generation ~14 times larger."""


def settle_gc() -> None:
    """Tune the cyclic garbage collector for a worker process, once start-up is done.

    Every request allocates a few hundred objects, so with CPython's default threshold a
    young collection ran every few requests, and with thousands of requests in flight the
    full collections walked all of them again and again: about a quarter of the CPU of the
    10,000-request fan-out benchmark. ``gc.freeze`` moves what start-up built (the imported
    modules, the configuration, the app's callbacks) out of every later collection, and a
    larger young generation collects as much garbage in fewer passes; the older
    generations keep their default proportions, so cycles are still freed as before, later.
    Only ``patient-sidekiq run``'s process calls this, never a host application.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Runner:
    """Runs the launchers of one worker process until a signal (or :meth:`stop`) ends them."""

    def __init__(
        self,
        config: Config,
        *,
        registry: CallbackRegistry | None = None,
        hooks: Hooks | None = None,
        handle_os_signals: bool = True,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else default_registry
        self.hooks = hooks if hooks is not None else default_hooks
        self.handle_os_signals = handle_os_signals
        self.launchers: list[Launcher] = []
        self.request_worker: RequestWorker | None = None
        self._http: HttpSettings | None = None
        # /metrics, /health and systemd notifications; child i of --processes on port + i
        self.operations = Operations(config, child_index=child_index())

    def handle_signal(self, name: str) -> None:
        """Pass a Sidekiq signal name to every launcher (TTIN to the first only: one dump)."""
        if name in ("TERM", "INT"):
            self.operations.stopping()  # /health says 503 and systemd hears STOPPING=1 now
        if name == "TTIN":
            if self.launchers:
                self.launchers[0].handle_signal(name)
            return
        for launcher in self.launchers:
            launcher.handle_signal(name)

    def quiet(self) -> None:
        """Stop fetching new jobs everywhere; running ones finish."""
        self.handle_signal("TSTP")

    def stop(self) -> None:
        """Stop every launcher (each waits up to ``shutdown_timeout`` for its jobs)."""
        self.handle_signal("TERM")

    def banner(self) -> str:
        """The startup line: version, Redis, queues, capacity, encryption on/off (never a key)."""
        config = self.config
        described = config.describe()
        queues = ", ".join(f"{name},{weight}" if weight else name for name, weight in config.queues)
        # A class is registered under its Ruby name and its Python path: count classes.
        python_callbacks = {self.registry.get(name) for name in self.registry.names()}
        return (
            f"patient-sidekiq {__version__} pid={os.getpid()} redis={described['redis']} "
            f"queues=[{queues}] max_connections={config.max_connections} "
            f"encryption={described['encryption']}"
            f"{'+hooks' if encryption_hooks.configured else ''} "
            f"secrets={len(config.secrets) + len(secrets.names())} "
            f"preprocessors={len(config.preprocessors) + len(preprocessors.names())} "
            f"python_callbacks={len(python_callbacks)} "
            f"(queue {config.python_callback_queue}) ruby_callback_queue={config.callback_queue}"
        )

    def http_settings(self) -> HttpSettings:
        """The HTTP settings with every secret and preprocessor, from code and configuration.

        Built once; raises :class:`ConfigurationError` when a secret's variable or file is
        missing or a built-in is misconfigured, so the CLI can refuse to start (exit 78)
        before anything connects.
        """
        if self._http is None:
            self._http = self.config.http_settings(
                build_secrets(self.config.secrets), build_preprocessors(self.config.preprocessors)
            )
        return self._http

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped; ``task_status.started()`` once every launcher is in the cluster."""
        config = self.config
        self.http_settings()  # a configuration problem stops us before Redis is touched
        log.info("%s", self.banner())
        raise_open_files_limit(config.max_connections)
        async with (
            contextlib.AsyncExitStack() as stack,
            RedisBridge(config.redis_target(), name="patient-sidekiq-payloads") as payloads_bridge,
        ):
            await self._check_redis(payloads_bridge)
            own_store_bridges: dict[str, RedisBridge] = {}
            for url in config.store_urls():
                # a payload store on a Redis of its own (the gem's `redis:` store option)
                own_store_bridges[url] = await stack.enter_async_context(
                    RedisBridge(url, name="patient-sidekiq-payload-store")
                )
            payloads = config.payload_settings(payloads_bridge, own_store_bridges, encryption_hooks)
            http_settings = replace(
                config.worker_settings(), handle_os_signals=False, labels=(REQUESTS_ROLE,)
            )
            outage = RedisOutage()  # every loop of the process: one line per Redis outage
            directory = CallbackDirectory(
                payloads_bridge, http_settings.identity, self.registry.names, outage=outage
            )
            routing = CallbackRouting(
                callback_queue=config.callback_queue,
                python_callback_queue=config.python_callback_queue,
                is_python_callback=directory.is_python_callback,
            )
            self.request_worker = RequestWorker(
                RequestWorkerSettings.from_config(config, payloads, routing, self.http_settings()),
                report=self.operations.report,
            )
            callbacks = CallbackWorker(
                CallbackWorkerSettings(
                    payloads=payloads,
                    hooks=self.hooks,
                    registry=self.registry,
                    ruby_callback_queue=config.callback_queue,
                    concurrency=config.callback_concurrency,
                    registered_elsewhere=lambda name: name in directory.known,
                    backtrace=config.backtrace,
                ),
                payloads_bridge,
            )
            http_queues = [name for name, _ in config.queues]
            http_dispatcher = Dispatcher()
            callbacks.register(http_dispatcher, http_queues)
            self.launchers = [
                Launcher(
                    http_settings,
                    http_dispatcher,
                    services=[self.request_worker, self.operations.probe("requests")],
                    on_signal=self.handle_signal,
                    outage=outage,
                    noun="requests",
                )
            ]
            if self.registry.names() and config.python_callback_queue not in http_queues:
                callback_queues = [config.python_callback_queue]
                callback_dispatcher = Dispatcher()
                callbacks.register(callback_dispatcher, callback_queues)
                callback_settings = replace(
                    config.replace(
                        queues=((config.python_callback_queue, 0),),
                        max_connections=config.callback_concurrency,
                    ).worker_settings(identity=make_identity()),
                    handle_os_signals=False,
                    labels=(CALLBACKS_ROLE,),
                )
                self.launchers.append(
                    Launcher(
                        callback_settings,
                        callback_dispatcher,
                        services=[self.operations.probe("callbacks")],
                        on_signal=self.handle_signal,
                        outage=outage,
                        noun="callbacks",
                    )
                )
            # SQL and S3 stores hold connections of their own: closed when the worker stops
            for store in payloads.stores.values():
                close = getattr(store, "close", None)
                if close is not None:
                    stack.callback(close)
            self.operations.attach(self.request_worker, callbacks, payloads_bridge, self.launchers)
            stack.callback(self.operations.close)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.operations.serve)  # /health: 503 "starting" until ready
                if self.handle_os_signals:
                    # Before any launcher beats: a TSTP must never meet SIGTSTP's default.
                    await nursery.start(self._os_signals)
                # Before the first fetch: the first result already routes by every worker.
                await nursery.start(directory.run)
                async with trio.open_nursery() as launchers:
                    for launcher in self.launchers:
                        await launchers.start(self._run_launcher, launcher)
                    self.operations.ready()  # every launcher beat once: READY=1
                    task_status.started()
                self.operations.stopping()
                nursery.cancel_scope.cancel()
        log.info("patient-sidekiq stopped")

    async def _check_redis(self, bridge: RedisBridge) -> None:
        # Fail at start as Sidekiq does: a worker that says "started" but can never fetch
        # hides a wrong URL or a firewall. Once running, outages are retried instead.
        try:
            await bridge.execute("PING")
        except RedisUnavailableError as exc:
            where = self.config.describe()["redis"]
            raise RedisUnavailableError(f"cannot reach Redis at {where}: {exc}") from exc

    async def _run_launcher(self, launcher: Launcher, *, task_status: Any) -> None:
        try:
            await launcher.run(task_status=task_status)
        finally:
            # One launcher ending (a Web UI "stop", a crash) ends the whole process.
            for other in self.launchers:
                other.stop()

    async def _os_signals(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(*_SIGNALS) as signals:
            task_status.started()
            async for number in signals:
                self.handle_signal(_SIGNALS[signal.Signals(number)])
