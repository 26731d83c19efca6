"""A real RequestWorker process for the crash-recovery tests.

``python -m tests.support.request_worker_main REDIS_URL --process-id ID --identity ID [options]``

Runs a :class:`~patient_sidekiq.sidekiq.launcher.Launcher` with the HTTP processor as its service,
OS signals handled (TERM/INT stop, TSTP quiets), and short intervals so that a killed
process is noticed quickly: the gem heartbeat (and so the ``max_connections`` key, which
lives two intervals) and the Sidekiq heartbeat default to 0.2 s. ``--payload-store`` makes
a ``"redis"`` :class:`~patient_sidekiq.wire.payload_store.RedisPayloadStore` readable (requests
stored as ``{"$ref": …}``); results are never stored. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import trio

from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher
from patient_sidekiq.wire.packing import PayloadSettings
from patient_sidekiq.wire.payload_store import RedisPayloadStore
from patient_sidekiq.worker.request_call import CallbackRouting, RequestWorkerSettings
from patient_sidekiq.worker.request_worker import RequestWorker


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.request_worker_main")
    parser.add_argument("redis_url")
    parser.add_argument("--process-id", required=True, help="the gem's process id")
    parser.add_argument("--identity", required=True, help="the Sidekiq identity")
    parser.add_argument("--queue", default="patient_http")
    parser.add_argument("--callback-queue", default="callbacks")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--heartbeat-interval", type=float, default=0.2)
    parser.add_argument("--orphan-threshold", type=float, default=0.5)
    parser.add_argument("--sidekiq-heartbeat", type=float, default=0.2)
    parser.add_argument("--payload-store", action="store_true")
    return parser.parse_args(argv)


async def run(options: argparse.Namespace) -> None:
    # The payload store gets its own connection: it must exist before the launcher's does.
    async with RedisBridge(options.redis_url, name="payload-store") as bridge:
        payloads = (
            PayloadSettings(stores={"redis": RedisPayloadStore(bridge)})
            if options.payload_store
            else PayloadSettings()
        )
        worker = RequestWorker(
            RequestWorkerSettings(
                http=HttpSettings(max_connections=options.concurrency),
                payloads=payloads,
                routing=CallbackRouting(callback_queue=options.callback_queue),
                heartbeat_interval=options.heartbeat_interval,
                orphan_threshold=options.orphan_threshold,
                process_id=options.process_id,
            )
        )
        settings = WorkerSettings(
            redis_url=options.redis_url,
            queues=[(options.queue, 0)],
            concurrency=options.concurrency,
            shutdown_timeout=options.shutdown_timeout,
            heartbeat_interval=options.sidekiq_heartbeat,
            handle_os_signals=True,
            identity=options.identity,
        )
        await Launcher(settings, Dispatcher(), services=[worker]).run()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    trio.run(run, parse(argv))


if __name__ == "__main__":
    main()
