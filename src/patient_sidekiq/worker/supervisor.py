"""The supervisor: N worker processes under one parent (``patient-sidekiq run --processes N``).

One trio process uses one core, so ``--processes N`` runs N copies of the worker command
under this supervisor, the way Sidekiq Enterprise's swarm or Puma's cluster mode do. Each
child gets ``PATIENT_SIDEKIQ_CHILD_INDEX=<i>`` (0 .. N-1) so its identity or tag can
differ, stdin from /dev/null, and the supervisor's stdout and stderr.

Signals to the supervisor (Sidekiq's meanings, protocol spec §6.5):

- ``TERM``/``INT``: send ``TERM`` to every child, wait up to ``stop_timeout``, ``KILL`` what
  is left; exit 0, or 1 when a child had to be killed. A second ``TERM``/``INT`` during the
  stop is forwarded as a second ``TERM``: each child stops waiting for its running requests
  and requeues them at once (the worker's "now"), then exits.
- ``TSTP``: quiet. Forwarded to every child, and a child (re)started later is quieted too:
  it gets ``TSTP`` as soon as it has a handler for it.
- ``TTIN``: the supervisor logs its children, then forwards ``TTIN``.
- ``HUP``: forwarded as it is. The worker does not handle ``HUP``, so its default action
  ends each child and the supervisor restarts them (an abrupt restart, not a graceful one).
  Under ``nohup`` (``HUP`` ignored at start) it stays ignored, by the children too.

``TSTP`` and ``TTIN`` stop (suspend) a process that has no handler for them yet, so they go
only to children that catch ``TSTP`` (Linux: ``SigCgt`` in ``/proc/<pid>/status``;
elsewhere after ``_READY_FALLBACK`` seconds of uptime). Children run in their own session,
so a Ctrl-C or Ctrl-Z at the terminal reaches only the supervisor, which decides what each
child gets and when.

A child that exits while the supervisor is not stopping is restarted after
``restart_delay``, doubled after each restart up to ``max_restart_delay`` and reset once a
child stayed up ``stable_after`` seconds. A child exiting with 78 (``EX_CONFIG``, the CLI's
configuration error) is not restarted: a restart would fail the same way, so the
supervisor stops the others and exits 78.

Keys: none; only the children talk to Redis.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.worker.systemd_notify import SystemdNotifier, notify_supervisor

__all__ = [
    "CHILD_INDEX_ENV",
    "EX_CONFIG",
    "EX_UNAVAILABLE",
    "Supervisor",
    "SupervisorSettings",
    "child_index",
    "run_supervisor",
    "supervise",
]

log = logging.getLogger(__name__)

#: Exit status of a configuration error (sysexits.h); a child exiting with it is not restarted.
EX_CONFIG = 78
#: Exit status when Redis does not answer at start (sysexits.h); a child is restarted.
EX_UNAVAILABLE = 69
#: Environment variable holding a child's index, 0 .. processes-1.
CHILD_INDEX_ENV = "PATIENT_SIDEKIQ_CHILD_INDEX"

_READY_POLL = 0.05
# Without /proc nothing tells when a child installed its handlers; its startup (connect,
# first heartbeat) takes well under this.
_READY_FALLBACK = 5.0
# After the stop timeout, stragglers (or a child spawned during the stop) are killed again
# this often until every slot has ended.
_KILL_AGAIN = 1.0


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """How many children to run, which command, and the restart and stop timings."""

    processes: int
    child_argv: Sequence[str]
    restart_delay: float = 1.0
    max_restart_delay: float = 30.0
    #: Seconds between ``TERM`` and ``KILL``; give the worker's shutdown timeout + a margin.
    stop_timeout: float = 30.0
    #: The children's environment; ``None`` = the supervisor's own.
    env: Mapping[str, str] | None = None
    #: A child that stayed up this long resets the restart delay to ``restart_delay``.
    stable_after: float = 60.0
    #: Off when embedded (tests): signals then arrive only through ``handle_signal``.
    handle_os_signals: bool = True

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ConfigurationError(f"processes must be at least 1, not {self.processes}")
        if not self.child_argv:
            raise ConfigurationError("child_argv is empty")
        for name in ("restart_delay", "max_restart_delay", "stop_timeout", "stable_after"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must not be negative")


def child_index(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's index under a supervisor, or ``None`` when it runs alone."""
    raw = (os.environ if environ is None else environ).get(CHILD_INDEX_ENV)
    return None if raw is None else int(raw)


@dataclass(slots=True)
class _Child:
    index: int
    process: trio.Process
    started: float
    ready: bool = False


class Supervisor:
    """Runs ``settings.processes`` children of ``settings.child_argv`` until stopped.

    ``run`` returns the exit status; ``handle_signal`` acts on a signal as if the OS had
    delivered it to the supervisor.
    """

    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings
        self._children: dict[int, _Child] = {}
        self._quiet = False
        self._stopping = trio.Event()
        self._exit_code = 0
        self._killed = False
        self._slots_left = settings.processes
        self._slots_done = trio.Event()

    @property
    def stopping(self) -> bool:
        """Whether a stop began (signal, ``stop()`` or a configuration error)."""
        return self._stopping.is_set()

    @property
    def quieting(self) -> bool:
        """Whether ``TSTP`` was received: every child, present and future, is quiet."""
        return self._quiet

    def pids(self) -> dict[int, int]:
        """A snapshot: child index -> pid of each child running now."""
        return {index: child.process.pid for index, child in self._children.items()}

    def stop(self, exit_code: int = 0) -> None:
        """Begin the stop: ``TERM`` to every child; ``run`` then returns ``exit_code``
        (or 1 when ``exit_code`` is 0 and a child had to be killed)."""
        if self._stopping.is_set():
            return
        self._exit_code = exit_code
        self._stopping.set()
        for child in list(self._children.values()):
            self._send(child, signal.SIGTERM)

    def handle_signal(self, signum: int) -> None:
        """Act on ``signum`` (TERM, INT, TSTP, TTIN or HUP) as described in the module."""
        if signum in (signal.SIGTERM, signal.SIGINT):
            name = signal.Signals(signum).name
            if self.stopping:
                count = len(self._children)
                log.warning(
                    "received %s again: telling %d %s to stop now",
                    name,
                    count,
                    "child" if count == 1 else "children",
                )
                for child in list(self._children.values()):
                    self._send(child, signal.SIGTERM)
                return
            log.info("received %s: stopping %d children", name, len(self._children))
            self.stop()
        elif signum == signal.SIGTSTP:
            log.info("received TSTP: quieting children")
            self._quiet = True
            for child in list(self._children.values()):
                if child.ready:
                    self._send(child, signal.SIGTSTP)
                else:
                    # Sends the TSTP itself if the child turns out to handle it by now.
                    self._check_ready(child)
        elif signum == signal.SIGTTIN:
            self._dump()
            for child in list(self._children.values()):
                if self._check_ready(child):
                    self._send(child, signal.SIGTTIN)
        elif signum == signal.SIGHUP:
            log.info("received HUP: forwarding it to %d children", len(self._children))
            for child in list(self._children.values()):
                self._send(child, signal.SIGHUP)
        else:
            raise ValueError(f"the supervisor does not handle signal {signum}")

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> int:
        """Start the children, supervise them until stopped, return the exit status.

        ``task_status.started(self)`` once every child has been started once.
        """
        with self._signal_receiver() as signals:
            try:
                async with trio.open_nursery() as nursery:
                    if signals is not None:
                        nursery.start_soon(self._signal_loop, signals)
                    for index in range(self.settings.processes):
                        await nursery.start(self._slot, index)
                    task_status.started(self)
                    await self._stopping.wait()
                    await self._stop_children()
                    nursery.cancel_scope.cancel()
            finally:
                # Reached with children left only on an error or a cancellation.
                with trio.CancelScope(shield=True):
                    for child in list(self._children.values()):
                        child.process.kill()
                        await child.process.wait()
        if self._exit_code == 0 and self._killed:
            return 1
        return self._exit_code

    def _signal_receiver(self) -> contextlib.AbstractContextManager[AsyncIterator[int] | None]:
        if not self.settings.handle_os_signals:
            return contextlib.nullcontext()
        wanted = [signal.SIGTERM, signal.SIGINT, signal.SIGTSTP, signal.SIGTTIN]
        # nohup leaves HUP ignored; catching it would undo that for the children as well.
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            wanted.append(signal.SIGHUP)
        return trio.open_signal_receiver(*wanted)

    async def _signal_loop(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            self.handle_signal(signum)

    async def _slot(self, index: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep child ``index`` running until the stop; one task per index."""
        delay = self.settings.restart_delay
        started = False
        try:
            while not self.stopping:
                try:
                    child = await self._spawn(index)
                except (FileNotFoundError, PermissionError) as exc:
                    log.error(  # noqa: TRY400 (the message says it all; no traceback)
                        "cannot start child %d: %s; stopping", index, exc
                    )
                    self.stop(EX_CONFIG)
                    break
                except OSError as exc:
                    # Out of processes or memory, say: may pass, so retry like a crash.
                    log.error(  # noqa: TRY400 (the message says it all; no traceback)
                        "cannot start child %d: %s; retrying in %.1f s", index, exc, delay
                    )
                    child = None
                if not started:
                    started = True
                    task_status.started()
                if child is None:
                    await self._pause(delay)
                    delay = min(delay * 2, self.settings.max_restart_delay)
                    continue
                code = await self._watch(child)
                uptime = trio.current_time() - child.started
                pid = child.process.pid
                if self.stopping:
                    log.info("child %d (pid %d) ended: %s", index, pid, _describe(code))
                    break
                if code == EX_CONFIG:
                    log.error(
                        "child %d (pid %d) ended with a configuration error (%d): stopping",
                        index,
                        pid,
                        code,
                    )
                    self.stop(EX_CONFIG)
                    break
                if uptime >= self.settings.stable_after:
                    delay = self.settings.restart_delay
                log.warning(
                    "child %d (pid %d) ended: %s after %.1f s; restarting in %.2f s",
                    index,
                    pid,
                    _describe(code),
                    uptime,
                    delay,
                )
                await self._pause(delay)
                delay = min(delay * 2, self.settings.max_restart_delay)
        finally:
            if not started:
                task_status.started()
            self._slots_left -= 1
            if self._slots_left == 0:
                self._slots_done.set()

    async def _spawn(self, index: int) -> _Child:
        env = dict(os.environ if self.settings.env is None else self.settings.env)
        env[CHILD_INDEX_ENV] = str(index)
        process = await trio.lowlevel.open_process(
            list(self.settings.child_argv),
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        child = _Child(index, process, trio.current_time())
        self._children[index] = child
        log.info("started child %d (pid %d)", index, process.pid)
        if self.stopping:
            # The stop began while this child was being spawned.
            self._send(child, signal.SIGTERM)
        return child

    async def _watch(self, child: _Child) -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._await_ready, child)
            code = await child.process.wait()
            nursery.cancel_scope.cancel()
        del self._children[child.index]
        return code

    async def _await_ready(self, child: _Child) -> None:
        while not self._check_ready(child):
            await trio.sleep(_READY_POLL)

    def _check_ready(self, child: _Child) -> bool:
        """Whether ``child`` handles TSTP (and so TTIN) by now; the first time it does, a
        quiet supervisor sends it TSTP."""
        if child.ready:
            return True
        caught = _catches(child.process.pid, signal.SIGTSTP)
        if caught is None:
            caught = trio.current_time() >= child.started + _READY_FALLBACK
        if caught:
            child.ready = True
            if self._quiet and not self.stopping:
                self._send(child, signal.SIGTSTP)
        return caught

    async def _pause(self, seconds: float) -> None:
        """Sleep before a restart; a stop ends it at once."""
        with trio.move_on_after(seconds):
            await self._stopping.wait()

    async def _stop_children(self) -> None:
        deadline = trio.current_time() + self.settings.stop_timeout
        while True:
            with trio.move_on_at(deadline):
                await self._slots_done.wait()
                return
            for child in list(self._children.values()):
                log.warning(
                    "child %d (pid %d) did not stop within %.1f s: killing it",
                    child.index,
                    child.process.pid,
                    self.settings.stop_timeout,
                )
                child.process.kill()
                self._killed = True
            deadline = trio.current_time() + _KILL_AGAIN

    def _send(self, child: _Child, signum: signal.Signals) -> None:
        log.debug("sending %s to child %d (pid %d)", signum.name, child.index, child.process.pid)
        # A child that already exited but is not reaped yet is skipped by send_signal.
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signum)

    def _dump(self) -> None:
        now = trio.current_time()
        lines = [
            f"child {child.index}: pid {child.process.pid}, up {now - child.started:.0f} s"
            + ("" if child.ready else ", starting")
            for child in sorted(self._children.values(), key=lambda c: c.index)
        ]
        log.warning(
            "TTIN: %d children%s%s",
            len(lines),
            " (quiet)" if self._quiet else "",
            "".join(f"\n  {line}" for line in lines),
        )


async def supervise(
    settings: SupervisorSettings, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> int:
    """Run a :class:`Supervisor` until it stops; returns the process exit status.

    ``task_status.started(supervisor)`` once every child has been started once. Under
    systemd (``NOTIFY_SOCKET``) the supervisor is the unit's main process and notifies for
    all (:func:`notify_supervisor`); the children never do.
    """
    supervisor = Supervisor(settings)
    notifier = SystemdNotifier.from_environ()
    if notifier is None:
        return await supervisor.run(task_status=task_status)
    exit_code = 0
    async with trio.open_nursery() as nursery:

        async def run(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal exit_code
            exit_code = await supervisor.run(task_status=task_status)
            nursery.cancel_scope.cancel()

        await nursery.start(run)
        task_status.started(supervisor)
        await notify_supervisor(
            notifier,
            children=lambda: len(supervisor.pids()),
            processes=settings.processes,
            stopping=lambda: supervisor.stopping,
        )
    notifier.close()
    return exit_code


def run_supervisor(settings: SupervisorSettings) -> int:
    """Synchronous entry point (``trio.run``); returns the process exit status."""
    return trio.run(supervise, settings)


def _catches(pid: int, signum: int) -> bool | None:
    """Whether ``pid`` has a handler for ``signum``; ``None`` when this cannot be told."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        return None
    return None


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
