"""One Redis connection, owned by one thread, shared by every trio task.

Why a thread at all: redis-py is blocking, and ``trio.to_thread.run_sync`` per command costs a
thread hop (70-150 µs of CPU) each time — more than the command itself. So one daemon thread owns
one connection; trio tasks drop their commands into a :class:`queue.SimpleQueue` (no hop), the
thread sends everything queued as ONE pipelined write, reads the replies in order, and wakes all
the waiting tasks with ONE ``run_sync_soon`` per batch. Commands that arrive while a round trip is
in flight go out together in the next write (auto-batching).

Semantics callers rely on:

* A task's commands stay contiguous and in order; tasks never interleave inside a submission.
* :meth:`RedisBridge.pipeline` is not atomic; :meth:`RedisBridge.transaction` is MULTI/EXEC.
* An error reply fails only its own command (:class:`RedisCommandError`).
* A broken connection (refused, reset, timed out: redis-py's ``socket_timeout``, 5 s unless the
  URL says otherwise) fails every command of the batch whose reply had not arrived yet with
  :class:`RedisUnavailableError`, which means "outcome unknown": the batch is never resent (a
  resent LPUSH would duplicate a job), and the next batch reconnects.
* Cancelling a waiting task does not un-send its command: the reply is just dropped. Callers
  whose write must happen (or must be known to have happened) shield the call.
* Leaving ``async with`` answers every command already submitted, then stops the thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, cast

import redis
import trio

from patient_sidekiq.errors import RedisCommandError, RedisUnavailableError
from patient_sidekiq.redis_io.redis_target import RedisTarget, as_target

Arg = str | bytes | int | float
"""One argument of a Redis command, as the caller may pass it."""

# Commands that change the state of the shared connection (or block it) would leak into other
# tasks' commands, so the bridge refuses them.
_REFUSED: Final = frozenset(
    {
        *("MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH"),  # would swallow others' commands
        *("SELECT", "SWAPDB", "HELLO", "AUTH", "RESET", "QUIT"),  # change everybody's session
        *("MONITOR", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"),  # turn the socket into a stream
        *("BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP"),  # block every other task
        *("BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT"),
    }
)
_STOP: Final = object()  # sentinel: the thread answers what precedes it, then exits


class _RawConnection(Protocol):
    """The part of ``redis.connection.Connection`` we use (redis-py leaves it unannotated)."""

    def pack_commands(self, commands: list[tuple[bytes | int | float, ...]]) -> list[bytes]: ...
    def send_packed_command(self, command: list[bytes], check_health: bool = ...) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BridgeStatistics:
    """Counters since the bridge started: commands written, pipelined writes, biggest write."""

    commands_sent: int = 0
    round_trips: int = 0
    largest_batch: int = 0


class _Submission:
    """One caller's contiguous commands; the thread fills in the outcome, trio wakes the caller.

    The caller parks on trio's low-level wait and is rescheduled directly: a trio.Event
    (with its parking lot), and for shielded callers a CancelScope, cost more than the
    rest of a submission's trip through the trio side.
    """

    __slots__ = ("commands", "failure", "replies", "task")

    def __init__(self, commands: list[tuple[bytes | int | float, ...]]) -> None:
        self.commands = commands
        self.replies: list[Any] = []
        self.failure: BaseException | None = None
        # Created in the caller's task; None once nobody waits (a cancelled caller).
        self.task: trio.lowlevel.Task | None = trio.lowlevel.current_task()


def _prepare(command: Sequence[Arg]) -> tuple[bytes | int | float, ...]:
    """Check one command in the caller's task and encode its strings there.

    Bad input must fail its own caller here: once in the thread it would break the whole batch.
    """
    if not command:
        raise ValueError("empty Redis command")
    name = command[0]
    if isinstance(name, str | bytes):
        upper = (name.decode("latin-1") if isinstance(name, bytes) else name).upper()
        if upper in _REFUSED:
            raise ValueError(f"{upper} cannot be sent through the shared RedisBridge connection")
    out: list[bytes | int | float] = []
    for arg in command:
        if isinstance(arg, str):
            out.append(arg.encode())  # UnicodeEncodeError (lone surrogate) raises right here
        elif isinstance(arg, bytes) or (isinstance(arg, int | float) and not isinstance(arg, bool)):
            out.append(arg)
        else:
            raise TypeError(f"Redis argument must be str, bytes, int or float, not {arg!r}")
    return tuple(out)


def _command_error(error: redis.ResponseError) -> RedisCommandError:
    """Rebuild Redis's own error text: redis-py strips known codes ("ERR ", "EXECABORT ")."""
    code = getattr(error, "status_code", None)
    return RedisCommandError(f"{code} {error}" if code else str(error))


def _convert(reply: Any) -> Any:
    """Turn error replies nested in arrays (EXEC's) into :class:`RedisCommandError` instances."""
    if isinstance(reply, redis.ResponseError):
        return _command_error(reply)
    if isinstance(reply, list):
        return [_convert(item) for item in reply]
    return reply


def raise_first_error(replies: list[Any]) -> list[Any]:
    """Return ``replies`` unchanged, or raise the first :class:`RedisCommandError` among them.

    :meth:`RedisBridge.pipeline` and :meth:`RedisBridge.transaction` hand error replies back
    as values; writers that must not mistake a refused command for success pass them here.
    """
    for reply in replies:
        if isinstance(reply, RedisCommandError):
            raise reply
    return replies


class RedisBridge:
    """Async front of one blocking Redis connection driven by one background thread."""

    def __init__(self, url: str | RedisTarget, *, name: str = "patient-sidekiq-redis") -> None:
        # protocol=2 keeps replies raw and plain (bytes, int, list, None); redis-py 8 defaults to
        # RESP3 (dicts, sets, push messages). A ``protocol`` in the URL's query still wins.
        self._pool = as_target(url).connection_pool(protocol=2)
        self._name = name
        self._queue: queue.SimpleQueue[_Submission | object] = queue.SimpleQueue()
        self._stats = BridgeStatistics()
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._stopped = trio.Event()
        self._closed = False
        # Batches failed with "outcome unknown"; written by the thread only (an int store is
        # atomic), read by the launcher's reconcile loop to notice lost replies.
        self._failures = 0

    async def __aenter__(self) -> RedisBridge:
        if self._thread is not None or self._closed:
            raise RuntimeError("a RedisBridge can only be started once")
        self._token = trio.lowlevel.current_trio_token()
        connection = cast(_RawConnection, self._pool.make_connection())
        # A daemon thread, like trio's own workers: it never blocks interpreter exit.
        self._thread = threading.Thread(
            target=self._run, args=(connection,), name=self._name, daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is None or self._closed:
            return
        self._closed = True  # set before the sentinel: nothing can be queued behind it
        self._queue.put(_STOP)
        # Shielded: pending commands are answered (or failed) before we return, never abandoned.
        with trio.CancelScope(shield=True):
            await self._stopped.wait()
        self._thread.join()  # the thread has signalled its very last step; this returns at once
        self._pool.disconnect()

    @property
    def failures(self) -> int:
        """How many batches failed with :class:`RedisUnavailableError` since the start.

        Each is a set of commands whose outcome is unknown; a change tells the worker to
        reconcile its own records once Redis answers again.
        """
        return self._failures

    def statistics(self) -> BridgeStatistics:
        """Return a snapshot of the counters (replaced whole by the thread, so consistent)."""
        return self._stats

    async def execute(self, *args: Arg, shielded: bool = False) -> Any:
        """Send one command; return its raw reply, or raise :class:`RedisCommandError`.

        ``shielded``: a cancellation does not interrupt the wait for the reply (it takes
        effect at the caller's next checkpoint), so the caller always learns the outcome,
        as inside a shielded CancelScope.
        """
        (reply,) = await self._submit([_prepare(args)], shielded=shielded)
        if isinstance(reply, RedisCommandError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send several commands back to back, in order, NOT atomically.

        Error replies come back as :class:`RedisCommandError` instances in the list, not raised.
        """
        prepared = [_prepare(command) for command in commands]
        return await self._submit(prepared) if prepared else []

    async def transaction(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Run the commands in MULTI ... EXEC (one write) and return EXEC's reply list.

        Raises :class:`RedisCommandError` if Redis refuses to queue a command (EXECABORT).
        Runtime errors of single commands (WRONGTYPE …) are instances inside the list.
        """
        prepared = [_prepare(command) for command in commands]
        if not prepared:
            return []
        replies = await self._submit([(b"MULTI",), *prepared, (b"EXEC",)])
        result = replies[-1]
        if isinstance(result, RedisCommandError):
            refused = [str(r) for r in replies[1:-1] if isinstance(r, RedisCommandError)]
            raise RedisCommandError("; ".join([str(result), *refused]))
        if not isinstance(result, list):  # None: only a WATCH could abort, and we refuse WATCH
            raise RedisCommandError(f"transaction aborted: EXEC replied {result!r}")
        return result

    async def _submit(
        self, commands: list[tuple[bytes | int | float, ...]], *, shielded: bool = False
    ) -> list[Any]:
        if self._closed:
            raise RedisUnavailableError("bridge is closed")
        if self._thread is None:
            raise RuntimeError("use the RedisBridge inside 'async with' first")
        submission = _Submission(commands)
        self._queue.put(submission)  # from here on the command WILL be sent, cancelled or not

        def abort(_: object) -> trio.lowlevel.Abort:
            if shielded:
                return trio.lowlevel.Abort.FAILED  # the answer wakes us; Cancelled comes after
            submission.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        # The answer runs in this thread via run_sync_soon, so never before we park here.
        await trio.lowlevel.wait_task_rescheduled(abort)
        if submission.failure is not None:
            message = f"Redis connection failed: {submission.failure}"
            raise RedisUnavailableError(message) from submission.failure
        return submission.replies

    # --- everything below runs in the bridge thread ---

    def _run(self, connection: _RawConnection) -> None:
        stopping = False
        try:
            while not stopping:
                item = self._queue.get()  # block for the first submission only ...
                batch: list[_Submission] = []
                while True:  # ... then take everything else already waiting
                    if item is _STOP:
                        stopping = True  # but still answer what was queued with it
                    else:
                        batch.append(cast(_Submission, item))
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._round_trip(connection, batch)
        finally:
            connection.disconnect()
            self._wake(self._stopped.set)

    def _round_trip(self, connection: _RawConnection, batch: list[_Submission]) -> None:
        commands = [command for submission in batch for command in submission.commands]
        failure: BaseException | None = None
        try:
            # Connects lazily, so the batch after a failure reconnects.
            connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            sent = self._stats
            self._stats = BridgeStatistics(
                sent.commands_sent + len(commands),
                sent.round_trips + 1,
                max(sent.largest_batch, len(commands)),
            )
        except Exception as exc:  # refused, reset, timeout, or anything unexpected
            failure = exc
        for submission in batch:
            if failure is None:
                try:
                    for _ in submission.commands:
                        submission.replies.append(self._read_one(connection))
                    continue
                except Exception as exc:  # the rest of the batch's replies are lost with it
                    failure = exc
            submission.failure = failure
        if failure is not None:
            connection.disconnect()  # never resent; the next batch starts on a fresh socket
            self._failures += 1
        self._wake(self._answer, batch)

    @staticmethod
    def _read_one(connection: _RawConnection) -> Any:
        try:
            return _convert(connection.read_response())
        except redis.ResponseError as exc:  # an error reply: only this command fails
            return _command_error(exc)

    def _wake(self, callback: Callable[..., object], *args: object) -> None:
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):  # trio has exited: nobody is waiting
            self._token.run_sync_soon(callback, *args)

    @staticmethod
    def _answer(batch: list[_Submission]) -> None:
        """Wake every waiter of one batch (runs in the trio thread)."""
        for submission in batch:
            task = submission.task
            if task is not None:
                submission.task = None
                trio.lowlevel.reschedule(task)
