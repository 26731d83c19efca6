"""Callback routing that cannot go astray: the Python callback names of every live worker.

Role: a CallbackWorker job must go to the Python callback queue when ANY worker can run its
callback, not only this one. A worker started without the module that registers a callback
(a leftover process, a deploy in progress) would otherwise push it to the Ruby queue, where
Ruby has no such class and the app's ``on_error`` never fires.

So each worker with Python callbacks publishes their names in a set keyed by its Sidekiq
identity, refreshed with its heartbeat and expiring like the heartbeat's process hash; and
each worker routes by the union of the sets of the processes in Sidekiq's ``processes``
set (read at start, then on every beat). A name nobody has registered goes to the Ruby
queue, which is what the gem would do; when it looks like a Python path (``pkg.Class``,
never a Ruby constant), the first job naming it is logged as an error, once per name.

Keys: ``patient_sidekiq:python_callbacks:<identity>`` (SADD/EXPIRE/DEL, ours); reads
``processes`` (Sidekiq's) and the other workers' sets.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import RedisCommandError, RedisUnavailableError
from patient_sidekiq.redis_io.outage import RedisOutage
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.registry.callbacks import is_ruby_constant_name
from patient_sidekiq.sidekiq.heartbeat import BEAT_INTERVAL, PROCESS_TTL

__all__ = ["CallbackDirectory"]

log = logging.getLogger(__name__)

_REDIS_ERRORS: Final = (RedisUnavailableError, RedisCommandError)
_WARNED_NAMES: Final = 1000
"""Names logged at most: callback names come from jobs, and hostile ones must not grow a set
(or the log) without bound."""


class CallbackDirectory:
    """Publishes this worker's Python callback names and knows everyone's.

    ``local_names`` is read at start and at each beat; its names are always routed to Python,
    even before Redis answered once.
    """

    def __init__(
        self,
        bridge: RedisBridge,
        identity: str,
        local_names: Callable[[], Iterable[str]],
        *,
        interval: float = BEAT_INTERVAL,
        outage: RedisOutage | None = None,
    ) -> None:
        self._bridge = bridge
        self._retry = (outage if outage is not None else RedisOutage()).retry_delay(
            "callback directory refresh"
        )
        self._identity = identity
        self._local_names = local_names
        self._interval = interval
        self._wait = interval  # longer while Redis fails (the outage's backoff)
        self._known: frozenset[str] = frozenset()
        # Read once here and at each refresh, not per routed result: the registry is filled
        # at import time, and listing it is not free.
        self._local = frozenset(local_names())
        self._warned: set[str] = set()

    @property
    def known(self) -> frozenset[str]:
        """Python callback names other live workers published (at the last refresh)."""
        return self._known

    def is_python_callback(self, name: str) -> bool:
        """Whether a CallbackWorker job for ``name`` goes to the Python callback queue."""
        if name in self._known or name in self._local:
            return True
        if (
            name not in self._warned
            and len(self._warned) < _WARNED_NAMES
            and "." in name
            and not is_ruby_constant_name(name)
        ):
            self._warned.add(name)
            log.error(
                "callback %r looks like a Python callback but no live worker registered it: "
                "its CallbackWorker job goes to the Ruby callback queue, where it will fail. "
                "Start a worker with the module that registers it (-r MODULE).",
                name[:200],
            )
        return False

    async def refresh(self) -> None:
        """Publish this worker's names, then read every live worker's. Raises on Redis errors."""
        self._local = frozenset(self._local_names())
        names = sorted(self._local)
        key = keys.python_callbacks(self._identity)
        if names:
            await self._bridge.transaction(
                [("DEL", key), ("SADD", key, *names), ("EXPIRE", key, PROCESS_TTL)]
            )
        identities = await self._bridge.execute("SMEMBERS", keys.PROCESSES)
        members = sorted(_text(member) for member in identities or ())
        if not members:
            self._known = frozenset()
            return
        replies = await self._bridge.pipeline(
            [("SMEMBERS", keys.python_callbacks(member)) for member in members]
        )
        self._known = frozenset(
            _text(name) for reply in replies if isinstance(reply, list | set) for name in reply
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh now and every beat until cancelled; withdraw this worker's names at the end."""
        try:
            await self._refresh_logged()
            task_status.started()
            while True:
                await self._retry.wait(self._wait)
                await self._refresh_logged()
        finally:
            # best effort: the key expires with the heartbeat anyway
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(2),
                contextlib.suppress(*_REDIS_ERRORS),
            ):
                await self._bridge.execute("DEL", keys.python_callbacks(self._identity))

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except _REDIS_ERRORS as exc:
            # Keep routing by what was known; a later beat tries again.
            self._wait = max(self._interval, self._retry.failed(exc))
        else:
            self._retry.succeeded()
            self._wait = self._interval


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
