"""A Python callback for the metrics tests (``run -r tests.support.metrics_callbacks``):
``on_complete`` succeeds, ``on_error`` raises, so both Python callback counters move."""

from __future__ import annotations

from typing import Any

from patient_sidekiq.registry.callbacks import callback


@callback("MetricsTest::Flaky")
class Flaky:
    def on_complete(self, response: Any) -> None:
        pass

    async def on_error(self, error: Any) -> None:
        raise RuntimeError(f"on_error fails on purpose ({error.error_type})")
