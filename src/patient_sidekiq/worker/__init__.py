"""The worker process: the RequestWorker (HTTP processor), in-flight tracking, the gem's
stats, the Python callback worker and directory, the runner and the supervisor.

The machinery for running a worker from code, re-exported here (names load at first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patient_sidekiq import _lazy_exports

if TYPE_CHECKING:
    from patient_sidekiq.http.settings import HttpSettings as HttpSettings
    from patient_sidekiq.redis_io.redis_bridge import RedisBridge as RedisBridge
    from patient_sidekiq.redis_io.redis_target import RedisTarget as RedisTarget
    from patient_sidekiq.registry.callbacks import CallbackRegistry as CallbackRegistry
    from patient_sidekiq.registry.hooks import Hooks as Hooks
    from patient_sidekiq.sidekiq.client import SidekiqClient as SidekiqClient
    from patient_sidekiq.sidekiq.job import Job as Job
    from patient_sidekiq.sidekiq.job import TimestampDialect as TimestampDialect
    from patient_sidekiq.sidekiq.launcher import Launcher as Launcher
    from patient_sidekiq.sidekiq.launcher import WorkerSettings as WorkerSettings
    from patient_sidekiq.sidekiq.processor import Dispatcher as Dispatcher
    from patient_sidekiq.worker.callback_directory import CallbackDirectory as CallbackDirectory
    from patient_sidekiq.worker.callback_worker import CallbackWorker as CallbackWorker
    from patient_sidekiq.worker.callback_worker import (
        CallbackWorkerSettings as CallbackWorkerSettings,
    )
    from patient_sidekiq.worker.inflight import InflightMonitor as InflightMonitor
    from patient_sidekiq.worker.request_call import CallbackRouting as CallbackRouting
    from patient_sidekiq.worker.request_call import RequestWorkerSettings as RequestWorkerSettings
    from patient_sidekiq.worker.request_worker import RequestWorker as RequestWorker
    from patient_sidekiq.worker.runner import Runner as Runner
    from patient_sidekiq.worker.runner import load_requires as load_requires
    from patient_sidekiq.worker.stats import Stats as Stats
    from patient_sidekiq.worker.supervisor import Supervisor as Supervisor
    from patient_sidekiq.worker.supervisor import SupervisorSettings as SupervisorSettings

# name -> module, imported at first use: `import patient_sidekiq` (or the CLI) loads
# only what is asked for.
_EXPORTS: dict[str, str] = {
    "Runner": "patient_sidekiq.worker.runner",
    "load_requires": "patient_sidekiq.worker.runner",
    "RequestWorker": "patient_sidekiq.worker.request_worker",
    "RequestWorkerSettings": "patient_sidekiq.worker.request_call",
    "CallbackRouting": "patient_sidekiq.worker.request_call",
    "CallbackWorker": "patient_sidekiq.worker.callback_worker",
    "CallbackWorkerSettings": "patient_sidekiq.worker.callback_worker",
    "CallbackDirectory": "patient_sidekiq.worker.callback_directory",
    "InflightMonitor": "patient_sidekiq.worker.inflight",
    "Stats": "patient_sidekiq.worker.stats",
    "Supervisor": "patient_sidekiq.worker.supervisor",
    "SupervisorSettings": "patient_sidekiq.worker.supervisor",
    "Launcher": "patient_sidekiq.sidekiq.launcher",
    "WorkerSettings": "patient_sidekiq.sidekiq.launcher",
    "Dispatcher": "patient_sidekiq.sidekiq.processor",
    "Job": "patient_sidekiq.sidekiq.job",
    "TimestampDialect": "patient_sidekiq.sidekiq.job",
    "SidekiqClient": "patient_sidekiq.sidekiq.client",
    "Hooks": "patient_sidekiq.registry.hooks",
    "CallbackRegistry": "patient_sidekiq.registry.callbacks",
    "HttpSettings": "patient_sidekiq.http.settings",
    "RedisBridge": "patient_sidekiq.redis_io.redis_bridge",
    "RedisTarget": "patient_sidekiq.redis_io.redis_target",
}

__all__ = [
    "CallbackDirectory",
    "CallbackRegistry",
    "CallbackRouting",
    "CallbackWorker",
    "CallbackWorkerSettings",
    "Dispatcher",
    "Hooks",
    "HttpSettings",
    "InflightMonitor",
    "Job",
    "Launcher",
    "RedisBridge",
    "RedisTarget",
    "RequestWorker",
    "RequestWorkerSettings",
    "Runner",
    "SidekiqClient",
    "Stats",
    "Supervisor",
    "SupervisorSettings",
    "TimestampDialect",
    "WorkerSettings",
    "load_requires",
]

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, globals())
