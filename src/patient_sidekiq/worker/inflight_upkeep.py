"""One round of the RequestWorker's periodic upkeep: the in-flight heartbeat, then the sweep.

Wire spec §7. The heartbeat refreshes this process's running requests in the gem's in-flight
keys; the orphan sweep re-enqueues those of processes that stopped beating. Both run every
``heartbeat_interval`` whatever happens: a heartbeat backed off past the orphan threshold
would get this process's own requests swept. Their Redis failures are reported to the
process's :class:`~patient_sidekiq.redis_io.outage.RedisOutage` (one line per outage, not one
per round and loop).

Redis keys: those of :meth:`InflightMonitor.heartbeat` and :meth:`InflightMonitor.sweep`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from patient_sidekiq.errors import PatientSidekiqError
from patient_sidekiq.redis_io.outage import RedisOutage
from patient_sidekiq.worker.inflight import InflightMonitor

__all__ = ["beat_and_sweep"]

log = logging.getLogger(__name__)


async def beat_and_sweep(
    monitor: InflightMonitor, running: Iterable[str], outage: RedisOutage
) -> None:
    """Heartbeat the ``running`` request ids, then sweep; failures go to ``outage``."""
    try:
        await monitor.heartbeat(list(running))
    except PatientSidekiqError as exc:
        outage.failed("in-flight heartbeat", exc)
    else:
        outage.succeeded()
    try:
        recovered = await monitor.sweep()
    except PatientSidekiqError as exc:
        outage.failed("orphan sweep", exc)
    else:
        outage.succeeded()
        if recovered:
            log.warning("re-enqueued %d requests of gone processes", recovered)
