"""A worker process for the OS-signal tests.

``python -m tests.support.launcher_main URL IDENTITY``
"""

from __future__ import annotations

import sys

import trio

from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher


def main() -> None:
    url, identity = sys.argv[1], sys.argv[2]
    settings = WorkerSettings(
        redis_url=url, queues=[("q", 0)], identity=identity, heartbeat_interval=0.05
    )
    trio.run(Launcher(settings, Dispatcher()).run)


if __name__ == "__main__":
    main()
