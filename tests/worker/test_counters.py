"""The in-process counters (worker/counters.py): the duration histogram's buckets."""

from __future__ import annotations

from patient_sidekiq.worker.counters import DURATION_BUCKETS, DurationHistogram


def test_an_observation_on_a_bound_falls_in_that_bucket_and_buckets_add_up() -> None:
    histogram = DurationHistogram(bounds=(0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert histogram.total == 8.65


def test_the_default_buckets_run_from_a_local_api_past_the_default_timeout() -> None:
    histogram = DurationHistogram()
    histogram.observe(60.0)
    histogram.observe(600.0)
    buckets = dict(histogram.cumulative())
    assert DURATION_BUCKETS[0] == 0.005
    assert buckets["0.005"] == 0
    assert (buckets["60.0"], buckets["120.0"], buckets["+Inf"]) == (1, 1, 2)
