"""Every Redis key name patient-sidekiq reads or writes, in one place.

Two families share one Redis: Sidekiq's own keys (queues, retry, dead, processes …)
and the ``patient_http`` gem's keys. Names must match the Ruby side byte for byte, so
no other module spells a key: they all ask this one.
"""

from __future__ import annotations

from typing import Final

# --- patient_http gem: external payload storage (wire spec §6) ---
PAYLOAD_PREFIX: Final = "patient_http:payloads:"
"""Default prefix of the gem's Redis payload store; the uuid key follows it."""

# --- patient_http-sidekiq gem: in-flight tracking and stats (wire spec §7, §8) ---
INFLIGHT_INDEX: Final = "sidekiq:patient_http:inflight_index"
INFLIGHT_JOBS: Final = "sidekiq:patient_http:inflight_jobs"
GEM_PROCESSES: Final = "sidekiq:patient_http:processes"
GC_LOCK: Final = "sidekiq:patient_http:gc_lock"
GC_LAST_RUN: Final = "sidekiq:patient_http:gc_last_run"
TOTALS: Final = "sidekiq:patient_http:totals"


def payload_key(key: str, prefix: str = PAYLOAD_PREFIX) -> str:
    """Return the Redis key of a stored payload."""
    return f"{prefix}{key}"


def gem_process_max_connections(process_id: str) -> str:
    """Return the key holding one processor's ``max_connections`` (its liveness marker)."""
    return f"{GEM_PROCESSES}:{process_id}:max_connections"
