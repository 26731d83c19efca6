"""Sidekiq 7's execution metrics, as the Web UI's Metrics tab (real Sidekiq 7.3) reads them."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest
import redis

from patient_sidekiq.sidekiq.metrics import METRICS_TTL, ExecutionMetrics
from tests.support.oracle import oracle_env, require_oracle
from tests.support.programs import require_binary

NOW = datetime(2026, 12, 3, 7, 5, 30, tzinfo=UTC)
WORKER = "PatientHttp::Sidekiq::RequestWorker"


def tracked() -> ExecutionMetrics:
    metrics = ExecutionMetrics()
    metrics.track(WORKER, 3, failed=False)  # bucket 0 (< 20 ms)
    metrics.track(WORKER, 120, failed=False)  # bucket 5 (100-150 ms)
    metrics.track(WORKER, 999, failed=True)  # counted, no time, no histogram
    return metrics


def test_commands_name_sidekiqs_keys_and_fields() -> None:
    commands = tracked().take_commands(NOW)
    assert commands == [
        (
            "BITFIELD", f"{WORKER}-03-07:5", "OVERFLOW", "SAT",
            "INCRBY", "u16", "#0", 1, "INCRBY", "u16", "#5", 1,
        ),
        ("EXPIRE", f"{WORKER}-03-07:5", METRICS_TTL),
        ("HINCRBY", "j|20261203|7:5", f"{WORKER}|p", 3),
        ("HINCRBY", "j|20261203|7:5", f"{WORKER}|ms", 123),
        ("HINCRBY", "j|20261203|7:5", f"{WORKER}|f", 1),
        ("EXPIRE", "j|20261203|7:5", METRICS_TTL),
    ]  # fmt: skip


def test_a_flush_that_failed_is_sent_again() -> None:
    metrics = tracked()
    first = metrics.take_commands(NOW)
    assert metrics.take_commands(NOW) == []
    metrics.restore(first)
    assert sorted(map(repr, metrics.take_commands(NOW))) == sorted(map(repr, first))


QUERY = """
require "json"
require "sidekiq"
require "sidekiq/metrics/query"
input = JSON.parse($stdin.read)
Sidekiq.configure_client { |c| c.redis = {url: input["url"]} }
now = Time.utc(2026, 12, 3, 7, 10, 0)
query = Sidekiq::Metrics::Query.new(now: now)
top = query.top_jobs(minutes: 60).job_results[input["class"]]
job = query.for_job(input["class"], minutes: 60).job_results[input["class"]]
puts JSON.generate({"totals" => top.totals, "hist" => job.hist["07:05"]})
"""


@pytest.mark.integration
@pytest.mark.interop
def test_real_sidekiq_metrics_tab_reads_what_we_wrote(
    redis_url: str, redis_client: redis.Redis
) -> None:
    root = require_oracle()
    for command in tracked().take_commands(NOW):
        redis_client.execute_command(*command)  # type: ignore[no-untyped-call]
    result = subprocess.run(
        [require_binary("ruby"), "-e", QUERY],
        input=json.dumps({"url": redis_url, "class": WORKER}),
        capture_output=True,
        text=True,
        env=oracle_env(root),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["totals"] == {"p": 3, "ms": 123, "f": 1, "s": 123 / 1000}
    # Sidekiq's fetch returns the buckets slowest first
    assert seen["hist"][::-1][:6] == [1, 0, 0, 0, 0, 1]
