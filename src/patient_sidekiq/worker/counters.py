"""In-process counters of what one worker process did, for its Prometheus endpoint.

Role: plain ints and dicts bumped on the hot path (a dict increment per finished request, a
bisect for the duration bucket), read only when ``/metrics`` is scraped
(:mod:`patient_sidekiq.worker.metrics` turns them into metric families). Keeping
``prometheus_client`` objects off the hot path spares each request their locks and label
lookups; only the trio thread writes these, and the scrape reads them on that same thread.

They count since the process started (Prometheus counters: a restart resets them), unlike
the gem's ``sidekiq:patient_http:totals`` hash (:mod:`patient_sidekiq.worker.stats`),
which every process of the cluster adds to. Touches no Redis keys.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DURATION_BUCKETS", "CallbackCounters", "DurationHistogram", "RequestCounters"]

DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
"""Upper bounds (seconds) of the request duration histogram: from a local API to the
gem's 60 s default timeout and beyond (a request's timeout may be longer)."""


@dataclass(slots=True)
class DurationHistogram:
    """Observations per bucket (not cumulative: the exposition adds them up), count and sum."""

    bounds: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf

    def observe(self, seconds: float) -> None:
        """Count one observation (``le`` semantics: a value equal to a bound falls in it)."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations ≤ le)`` for every bound and ``+Inf``, as Prometheus wants."""
        running = 0
        buckets: list[tuple[str, int]] = []
        for bound, count in zip([*map(repr, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclass(slots=True)
class RequestCounters:
    """What the HTTP processor of one process did with its requests."""

    finished: defaultdict[tuple[str, str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    """Finished requests by ``(status, error_type, error_class)``: a response delivered to
    ``on_complete`` has its status and two empty strings; an error has the gem's
    ``error_type`` and the Ruby class its ``on_error`` sees, and the status when the server
    answered (an HttpError)."""
    durations: dict[str, DurationHistogram] = field(
        default_factory=lambda: {"response": DurationHistogram(), "error": DurationHistogram()}
    )
    """Request durations (the result's, redirect hops included) by result type."""
    callbacks_pushed: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    """CallbackWorker jobs pushed, by queue."""
    results_dropped: int = 0
    """Results not delivered because another process had re-enqueued the request."""
    capacity_refusals: int = 0
    """Jobs refused because ``max_connections`` requests were already in flight."""


@dataclass(slots=True)
class CallbackCounters:
    """Python callback jobs (``on_complete``/``on_error``) run in this process."""

    run: int = 0
    """Jobs whose callback ran to an end, succeeded or failed (Sidekiq's "processed")."""
    failed: int = 0
    """Jobs that raised (their unpacking, a hook or the callback): filed for retry."""
