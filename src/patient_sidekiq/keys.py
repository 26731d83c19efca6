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


# --- Sidekiq itself (protocol spec §0); shared with every Ruby Sidekiq process ---
QUEUES: Final = "queues"
SCHEDULE: Final = "schedule"
RETRY: Final = "retry"
DEAD: Final = "dead"
PROCESSES: Final = "processes"
PROCESS_CLEANUP: Final = "process_cleanup"
STAT_PROCESSED: Final = "stat:processed"
STAT_FAILED: Final = "stat:failed"


def queue(name: str) -> str:
    """Return the list key of a Sidekiq queue (``queue:<name>``)."""
    return f"queue:{name}"


def process_work(identity: str) -> str:
    """Return the hash listing the jobs a process is running (the Busy page reads it)."""
    return f"{identity}:work"


def process_workers_legacy(identity: str) -> str:
    """Return the running-jobs hash Sidekiq 6.4 and older read (6.5 renamed it ``:work``)."""
    return f"{identity}:workers"


def process_signals(identity: str) -> str:
    """Return the list the Web UI / API pushes TSTP, TERM and TTIN onto."""
    return f"{identity}-signals"


def daily_stat(counter: str, day: str) -> str:
    """Return the daily key of a stat counter; ``day`` is a UTC ``YYYY-MM-DD``."""
    return f"{counter}:{day}"


def metrics_minute(bucket: str) -> str:
    """Return Sidekiq 7's per-minute metrics hash; ``bucket`` is ``YYYYMMDD|H:M`` (UTC)."""
    return f"j|{bucket}"


def metrics_histogram(class_name: str, window: str) -> str:
    """Return one job class's duration histogram (a BITFIELD); ``window`` is ``DD-HH:M``."""
    return f"{class_name}-{window}"


# --- patient-sidekiq's own keys: reliable fetch (no Ruby process reads these) ---
INPROGRESS_REGISTRY: Final = "patient_sidekiq:inprogress"
"""Hash: in-progress list key -> JSON {"identity": …, "queue": …}, for the recovery pass."""


def inprogress(identity: str, queue_name: str) -> str:
    """Return the list holding jobs a process popped from one queue and has not finished."""
    return f"patient_sidekiq:inprogress:{identity}:{queue_name}"


CLAIM_MARKER_PREFIX: Final = "patient_sidekiq:claimed:"


def claim_marker(task_member: str) -> str:
    """Return the short-lived key saying "this process's claim of a task landed".

    **Ours**. Written by ``inflight_claim.lua`` with the result push, deleted with a later
    claim once the reply arrived; it only matters when that reply was lost.
    """
    return f"{CLAIM_MARKER_PREFIX}{task_member}"


# --- patient-sidekiq's own keys: callback routing ---


def python_callbacks(identity: str) -> str:
    """Return the set of Python callback names the process ``identity`` can run.

    **Ours**. Written by :mod:`patient_sidekiq.worker.callback_directory` with the lifetime of the
    process's heartbeat hash (refreshed with it, gone within a minute of a crash), so every
    worker routes to the Python callback queue by the union of the live ones.
    """
    return f"patient_sidekiq:python_callbacks:{identity}"
