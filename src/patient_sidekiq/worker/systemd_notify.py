"""systemd's notification protocol (``sd_notify``), without libsystemd.

Role: under a unit with ``Type=notify``, systemd passes ``NOTIFY_SOCKET`` (a unix datagram
socket: a path, or ``@name`` in the abstract namespace) and, with ``WatchdogSec=``,
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). :class:`SystemdNotifier` sends newline-separated
``KEY=VALUE`` datagrams there: ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=…``.
The socket is non-blocking and every failure is logged once and otherwise ignored: a lost
notification must never stop the worker. A worker process notifies through
:mod:`~patient_sidekiq.worker.operations`; a ``--processes`` supervisor, systemd's main
process then, through :func:`notify_supervisor`. Touches no Redis keys.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

import trio

__all__ = ["SystemdNotifier", "notify_supervisor"]

log = logging.getLogger(__name__)

_SUPERVISOR_TICK: Final = 0.5
"""How often a supervisor looks at its children and whether it is stopping."""


class SystemdNotifier:
    """Sends notifications to ``address``; ``watchdog_interval`` is how often ``WATCHDOG=1``
    must go (half of ``WATCHDOG_USEC``, as sd_watchdog_enabled advises), or None."""

    def __init__(self, address: str, *, watchdog_interval: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        # The abstract namespace is spelt with a leading "@" and addressed with a NUL byte.
        self._target = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> SystemdNotifier | None:
        """The notifier systemd asked for in ``environ`` (``os.environ``), or None.

        ``WATCHDOG_USEC`` counts only when ``WATCHDOG_PID`` is unset or names ``pid`` (this
        process): systemd watches the main process, not one it forked.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        if not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract: not notifying", address)
            return None
        interval: float | None = None
        watchdog_pid = env.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
        try:
            usec = int(env.get("WATCHDOG_USEC", "0") or "0")
        except ValueError:
            usec = 0
        if usec > 0 and mine:
            interval = usec / 2 / 1_000_000
        return cls(address, watchdog_interval=interval)

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; whether it went."""
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._socket is None:
                kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                self._socket = socket.socket(socket.AF_UNIX, kind)
                self._socket.setblocking(False)
            self._socket.sendto(message, self._target)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("could not notify systemd at %s: %s", self.address, exc)
            return False
        return True

    def close(self) -> None:
        """Close the socket (a later :meth:`notify` opens a new one)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def notify_supervisor(
    notifier: SystemdNotifier,
    *,
    children: Callable[[], int],
    processes: int,
    stopping: Callable[[], bool],
) -> None:
    """Notifications of a ``--processes`` supervisor (the unit's main process), until cancelled.

    ``READY=1`` at once (call it once every child has been started), ``WATCHDOG=1`` while
    the supervisor's loop runs (it restarts dead children; each child's own health is its
    ``/health``), ``STATUS=`` with the children running, ``STOPPING=1`` once ``stopping()``.
    """
    notifier.notify("READY=1", f"STATUS={_children_status(children(), processes)}")
    interval = min(_SUPERVISOR_TICK, notifier.watchdog_interval or _SUPERVISOR_TICK)
    watchdog_due = 0.0
    last_status = ""
    while not stopping():
        lines = []
        if notifier.watchdog_interval is not None and trio.current_time() >= watchdog_due:
            lines.append("WATCHDOG=1")
            watchdog_due = trio.current_time() + notifier.watchdog_interval
        status = _children_status(children(), processes)
        if status != last_status:
            lines.append(f"STATUS={status}")
            last_status = status
        if lines:
            notifier.notify(*lines)
        await trio.sleep(interval)
    notifier.notify("STOPPING=1", "STATUS=stopping")
    await trio.sleep_forever()


def _children_status(running: int, processes: int) -> str:
    return f"supervising {running} of {processes} worker processes"
