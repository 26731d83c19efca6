"""Benchmark of the Sidekiq layer: push N no-op jobs, drain them through the processor."""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import trio

from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.fetch import ReliableFetch
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.processor import Dispatcher, Processor, Work
from patient_sidekiq.sidekiq.retry import RetryPolicy
from patient_sidekiq.sidekiq.unit_of_work import QueueOrder

# Run as ``python scripts/bench_fetch.py``: the repository root on sys.path for tests.support.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.redis import running_redis


@contextmanager
def redis_server() -> Iterator[str]:
    """REDIS_URL, or a private redis-server (tests/support/redis.py) for the run."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    binary = shutil.which("redis-server") or "redis-server"
    with (
        tempfile.TemporaryDirectory() as directory,
        running_redis(Path(directory), binary=binary) as server,
    ):
        yield server.url


async def bench(url: str, total: int, concurrency: int) -> None:
    queue = "bench"
    redis.Redis.from_url(url).delete(f"queue:{queue}")
    async with RedisBridge(url) as bridge:
        client = SidekiqClient(bridge)
        started = time.perf_counter()
        for first in range(0, total, 1000):
            jobs = [
                Job.new("Bench::Noop", [i], queue=queue)
                for i in range(first, min(first + 1000, total))
            ]
            await client.push_bulk(jobs)
        push_seconds = time.perf_counter() - started

        done = 0
        finished = trio.Event()

        async def noop(job: Job, work: Work) -> None:
            nonlocal done
            done += 1
            if done == total:
                finished.set()

        fetch = ReliableFetch(
            bridge, url, identity="bench:1:000000000000", queues=QueueOrder([(queue, 0)])
        )
        processor = Processor(
            bridge,
            fetch,
            Dispatcher({"Bench::Noop": noop}),
            concurrency=concurrency,
            policy=RetryPolicy(),
        )
        before_trips = bridge.statistics().round_trips
        cpu_before = os.times()
        started = time.perf_counter()
        async with trio.open_nursery() as jobs:
            jobs.start_soon(processor.fetch_loop, jobs)
            await finished.wait()
            await processor.wait_idle()
            jobs.cancel_scope.cancel()
        seconds = time.perf_counter() - started
        cpu_after = os.times()
        await fetch.close()
        cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        trips = bridge.statistics().round_trips - before_trips
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"pushed  {total} jobs in {push_seconds:.2f} s "
        f"({total / push_seconds:,.0f} jobs/s, push_bulk of 1000)"
    )
    print(
        f"drained {total} jobs in {seconds:.2f} s: {total / seconds:,.0f} jobs/s, "
        f"CPU {cpu / total * 1e6:.1f} us/job, {trips} Redis round trips, "
        f"concurrency {concurrency}, peak RSS {rss_mb:.0f} MB"
    )


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    with redis_server() as url:
        trio.run(bench, url, total, concurrency)


if __name__ == "__main__":
    main()
