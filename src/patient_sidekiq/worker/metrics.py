"""The worker's Prometheus metrics, collected when ``/metrics`` is scraped.

Role: :class:`WorkerCollector` is a ``prometheus_client`` custom collector. Nothing is
pushed into prometheus objects while the worker runs; at scrape time it reads the plain
counters (:mod:`patient_sidekiq.worker.counters`), the RequestWorker's in-flight count and
every watched Redis connection's statistics (lower layers cannot import this one, so their
counters are read here), and builds the families below. :func:`worker_registry` adds
prometheus_client's process collector (CPU, memory, open descriptors).

========================================================  ==========  =========================
metric                                                    type        labels
========================================================  ==========  =========================
``patient_sidekiq_requests_total``                        counter     ``status``, ``error_type``,
                                                                      ``error``
``patient_sidekiq_request_duration_seconds``              histogram   ``result`` (response/error)
``patient_sidekiq_requests_in_flight``                    gauge
``patient_sidekiq_request_capacity``                      gauge       (``max_connections``)
``patient_sidekiq_capacity_refusals_total``               counter
``patient_sidekiq_results_dropped_total``                 counter
``patient_sidekiq_callback_jobs_pushed_total``            counter     ``queue``
``patient_sidekiq_python_callbacks_total``                counter
``patient_sidekiq_python_callbacks_failed_total``         counter
``patient_sidekiq_redis_round_trips_total``               counter     ``connection``
``patient_sidekiq_redis_commands_total``                  counter     ``connection``
``patient_sidekiq_redis_failures_total``                  counter     ``connection``
``patient_sidekiq_healthy``                               gauge       (what /health says)
``patient_sidekiq_info``                                  gauge       ``version``
========================================================  ==========  =========================

Touches no Redis keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from patient_sidekiq._version import __version__
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.worker.counters import CallbackCounters, RequestCounters

__all__ = ["CONTENT_TYPE", "MetricSources", "WorkerCollector", "render", "worker_registry"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Prometheus text format's content type (version 0.0.4)."""


def _nothing_in_flight() -> int:
    return 0


def _healthy() -> bool:
    return True


def _no_connections() -> Mapping[str, RedisBridge]:
    return {}


@dataclass(slots=True)
class MetricSources:
    """Where the collector reads from; filled in as the worker's parts come to life."""

    requests: RequestCounters
    callbacks: CallbackCounters
    capacity: int = 0
    in_flight: Callable[[], int] = _nothing_in_flight
    healthy: Callable[[], bool] = _healthy
    connections: Callable[[], Mapping[str, RedisBridge]] = _no_connections


class WorkerCollector(Collector):
    """Builds every ``patient_sidekiq_*`` family from :class:`MetricSources` at each scrape."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        """One scrape's families (runs on the trio thread, which alone writes the counters)."""
        sources = self.sources
        yield from self._requests(sources.requests)
        in_flight = GaugeMetricFamily(
            "patient_sidekiq_requests_in_flight", "HTTP requests running now in this process"
        )
        in_flight.add_metric([], sources.in_flight())
        yield in_flight
        capacity = GaugeMetricFamily(
            "patient_sidekiq_request_capacity",
            "requests this process runs at once (max_connections)",
        )
        capacity.add_metric([], sources.capacity)
        yield capacity
        callbacks = sources.callbacks
        yield _counter(
            "patient_sidekiq_python_callbacks",
            "Python callback jobs run in this process (succeeded or failed)",
            callbacks.run,
        )
        yield _counter(
            "patient_sidekiq_python_callbacks_failed",
            "Python callback jobs that raised (filed for retry)",
            callbacks.failed,
        )
        yield from self._redis(sources.connections())
        healthy = GaugeMetricFamily(
            "patient_sidekiq_healthy", "1 when GET /health answers 200, else 0"
        )
        healthy.add_metric([], 1 if sources.healthy() else 0)
        yield healthy
        info = GaugeMetricFamily("patient_sidekiq_info", "the worker's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def _requests(self, counters: RequestCounters) -> Iterator[Metric]:
        finished = CounterMetricFamily(
            "patient_sidekiq_requests",
            "finished HTTP requests whose result was pushed, by HTTP status (empty without a "
            "response), gem error_type and Ruby error class (both empty for a response)",
            labels=["status", "error_type", "error"],
        )
        for (status, error_type, error), count in list(counters.finished.items()):
            finished.add_metric([status, error_type, error], count)
        yield finished
        durations = HistogramMetricFamily(
            "patient_sidekiq_request_duration_seconds",
            "duration of finished HTTP requests, redirects included, by result type",
            labels=["result"],
        )
        for result, histogram in counters.durations.items():
            durations.add_metric([result], histogram.cumulative(), sum_value=histogram.total)
        yield durations
        pushed = CounterMetricFamily(
            "patient_sidekiq_callback_jobs_pushed",
            "CallbackWorker jobs pushed with a request's result, by queue",
            labels=["queue"],
        )
        for queue, count in list(counters.callbacks_pushed.items()):
            pushed.add_metric([queue], count)
        yield pushed
        yield _counter(
            "patient_sidekiq_capacity_refusals",
            "RequestWorker jobs refused because max_connections requests were in flight",
            counters.capacity_refusals,
        )
        yield _counter(
            "patient_sidekiq_results_dropped",
            "results not pushed because another process had re-enqueued the request",
            counters.results_dropped,
        )

    def _redis(self, connections: Mapping[str, RedisBridge]) -> Iterator[Metric]:
        labels = ["connection"]
        trips = CounterMetricFamily(
            "patient_sidekiq_redis_round_trips",
            "pipelined writes to Redis (each answered by one read of every reply)",
            labels=labels,
        )
        commands = CounterMetricFamily(
            "patient_sidekiq_redis_commands", "commands sent to Redis", labels=labels
        )
        failures = CounterMetricFamily(
            "patient_sidekiq_redis_failures",
            "batches failed with Redis unreachable (outcome unknown)",
            labels=labels,
        )
        for name, bridge in sorted(connections.items()):
            statistics = bridge.statistics()
            trips.add_metric([name], statistics.round_trips)
            commands.add_metric([name], statistics.commands_sent)
            failures.add_metric([name], bridge.failures)
        yield from (trips, commands, failures)


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def worker_registry(sources: MetricSources) -> CollectorRegistry:
    """A registry of its own (never prometheus_client's global one) with our collector and
    the process collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(sources))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
