"""The Prometheus collector (worker/metrics.py), rendered and parsed back, with real Redis
connections for the round-trip counters."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from patient_sidekiq import __version__
from patient_sidekiq.errors import RedisUnavailableError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.wire.response import Response
from patient_sidekiq.worker.counters import CallbackCounters
from patient_sidekiq.worker.metrics import MetricSources, render, worker_registry
from patient_sidekiq.worker.request_log import RequestReport


def scrape(sources: MetricSources) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    text = render(worker_registry(sources)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ok(duration: float) -> Response:
    return Response.build(
        status=200, headers={}, body=b"", duration=duration, request_id="r", url="http://h/",
        http_method="get",
    )  # fmt: skip


async def test_a_scrape_reads_counters_gauges_and_redis_round_trips(redis_url: str) -> None:
    report = RequestReport("off")
    callbacks = CallbackCounters(run=3, failed=1)
    async with RedisBridge(redis_url) as bridge:
        sources = MetricSources(
            report.counters,
            callbacks,
            capacity=256,
            in_flight=lambda: 7,
            connections=lambda: {"requests": bridge},
        )
        before = scrape(sources)
        await bridge.execute("PING")
        await bridge.pipeline([("PING",), ("PING",)])
        report.finished("a", ok(0.02), "default")
        report.finished("b", ok(3.0), "default")
        after = scrape(sources)
    trips = ("patient_sidekiq_redis_round_trips_total", (("connection", "requests"),))
    commands = ("patient_sidekiq_redis_commands_total", (("connection", "requests"),))
    assert after[trips] - before[trips] == 2
    assert after[commands] - before[commands] == 3
    labels = (("error", ""), ("error_type", ""), ("status", "200"))
    assert ("patient_sidekiq_requests_total", labels) not in before
    assert after["patient_sidekiq_requests_total", labels] == 2
    response = (("result", "response"),)
    assert after["patient_sidekiq_request_duration_seconds_count", response] == 2
    assert after["patient_sidekiq_request_duration_seconds_sum", response] == 3.02
    assert (
        after["patient_sidekiq_request_duration_seconds_bucket", (("le", "0.025"), *response)] == 1
    )
    assert (
        after["patient_sidekiq_request_duration_seconds_bucket", (("le", "+Inf"), *response)] == 2
    )
    assert after["patient_sidekiq_callback_jobs_pushed_total", (("queue", "default"),)] == 2
    assert after["patient_sidekiq_requests_in_flight", ()] == 7
    assert after["patient_sidekiq_request_capacity", ()] == 256
    assert after["patient_sidekiq_python_callbacks_total", ()] == 3
    assert after["patient_sidekiq_python_callbacks_failed_total", ()] == 1
    assert after["patient_sidekiq_info", (("version", __version__),)] == 1
    assert after["patient_sidekiq_healthy", ()] == 1
    assert after["process_open_fds", ()] > 0  # prometheus_client's process collector


async def test_an_unanswered_batch_counts_as_a_redis_failure() -> None:
    sources = MetricSources(RequestReport("off").counters, CallbackCounters())
    async with RedisBridge("redis://127.0.0.1:1/0") as bridge:
        sources.connections = lambda: {"payloads": bridge}
        with pytest.raises(RedisUnavailableError):
            await bridge.execute("PING")
        samples = scrape(sources)
    assert samples["patient_sidekiq_redis_failures_total", (("connection", "payloads"),)] == 1
    assert samples["patient_sidekiq_redis_round_trips_total", (("connection", "payloads"),)] == 0
