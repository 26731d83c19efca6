"""Sidekiq 7's execution metrics: what the Web UI's Metrics tab shows for the jobs we run.

A Sidekiq 7 server counts, per job class and UTC minute, the jobs processed (``Class|p``),
failed (``Class|f``) and the milliseconds of the successful ones (``Class|ms``) in the hash
``j|YYYYMMDD|H:M`` (hour and minute not zero-padded), and files each successful job's
duration into a histogram of 26 saturating u16 buckets (``BITFIELD <Class>-DD-HH:M``). Both
live 8 hours. It adds them up in memory and flushes on every beat; so does
:class:`ExecutionMetrics`, which the heartbeat flushes. Without it, a Ruby user moving
RequestWorker jobs to us would find them gone from the Metrics tab.

Keys: ``j|<YYYYMMDD>|<H>:<M>``, ``<class>-<DD>-<HH>:<M>``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from datetime import datetime
from typing import Any, Final

from patient_sidekiq import keys

__all__ = ["BUCKET_LIMITS_MS", "METRICS_TTL", "ExecutionMetrics"]

BUCKET_LIMITS_MS: Final = (
    20, 30, 45, 65, 100, 150, 225, 335, 500, 750, 1100, 1700, 2500, 3800, 5750,
    8500, 13000, 20000, 30000, 45000, 65000, 100000, 150000, 225000, 335000,
)  # fmt: skip
"""Upper bounds (exclusive) of Sidekiq's histogram buckets; a 26th bucket takes the rest."""
METRICS_TTL: Final = 8 * 60 * 60


class ExecutionMetrics:
    """Counts executions until the next flush (kept for the next one if Redis is down)."""

    def __init__(self) -> None:
        self._jobs: Counter[str] = Counter()
        self._grams: dict[str, list[int]] = {}

    def track(self, class_name: str, elapsed_ms: int, *, failed: bool) -> None:
        """Count one execution; a failed one adds no time and no histogram entry (Sidekiq)."""
        self._jobs[f"{class_name}|p"] += 1
        if failed:
            self._jobs[f"{class_name}|f"] += 1
            return
        self._jobs[f"{class_name}|ms"] += elapsed_ms
        buckets = self._grams.setdefault(class_name, [0] * (len(BUCKET_LIMITS_MS) + 1))
        buckets[bisect_right(BUCKET_LIMITS_MS, elapsed_ms)] += 1

    def take_commands(self, now: datetime) -> list[tuple[Any, ...]]:
        """The commands that flush everything counted so far (at UTC ``now``), and reset."""
        jobs, grams = self._jobs, self._grams
        self._jobs, self._grams = Counter(), {}
        if not jobs:
            return []
        commands: list[tuple[Any, ...]] = []
        window = f"{now:%d-%H}:{now.minute}"
        for class_name, buckets in grams.items():
            key = keys.metrics_histogram(class_name, window)
            increments = [
                item
                for index, count in enumerate(buckets)
                if count
                for item in ("INCRBY", "u16", f"#{index}", min(count, 65535))
            ]
            commands += [("BITFIELD", key, "OVERFLOW", "SAT", *increments)]
            commands += [("EXPIRE", key, METRICS_TTL)]
        minute = keys.metrics_minute(f"{now:%Y%m%d}|{now.hour}:{now.minute}")
        commands += [("HINCRBY", minute, field, value) for field, value in jobs.items()]
        commands += [("EXPIRE", minute, METRICS_TTL)]
        return commands

    def restore(self, commands: list[tuple[Any, ...]]) -> None:
        """Put back what a failed flush carried, so the next flush sends it again."""
        for command in commands:
            if command[0] == "HINCRBY":
                self._jobs[command[2]] += int(command[3])
            elif command[0] == "BITFIELD":
                class_name = command[1].rsplit("-", 2)[0]
                buckets = self._grams.setdefault(class_name, [0] * (len(BUCKET_LIMITS_MS) + 1))
                increments = command[4:]
                for index in range(0, len(increments), 4):
                    buckets[int(increments[index + 2][1:])] += int(increments[index + 3])
