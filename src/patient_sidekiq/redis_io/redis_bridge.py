"""One Redis connection, driven from the trio thread, shared by every trio task.

redis-py is blocking, and ``trio.to_thread.run_sync`` per command costs a thread hop (70-150 µs
of CPU) each time, more than the command itself. So every task drops its commands into one
outbox (no hop, no lock), and one I/O task sends everything queued as ONE pipelined write, reads
the replies in order (hiredis parses them) and reschedules each waiting task. Commands that
arrive while a round trip is in flight go out together in the next write (auto-batching).
The socket is read and written without blocking on trio's own event loop: an earlier design
had a thread own the connection, whose wake-ups (a futex per batch, a wake-up byte to trio,
GIL hand-offs) cost about 15 % of the worker's CPU. redis-py still opens each connection, in
a worker thread (address, Sentinel, TLS, AUTH, SELECT), and then hands over its socket.

Semantics callers rely on:

* A task's commands stay contiguous and in order; tasks never interleave inside a submission.
* :meth:`RedisBridge.pipeline` is not atomic; :meth:`RedisBridge.transaction` is MULTI/EXEC.
* An error reply fails only its own command (:class:`RedisCommandError`).
* A broken connection (refused, reset, timed out: redis-py's ``socket_timeout``, 5 s unless the
  URL says otherwise) fails every command of the batch whose reply had not arrived yet with
  :class:`RedisUnavailableError`, which means "outcome unknown": the batch is never resent (a
  resent LPUSH would duplicate a job), and the next batch reconnects.
* Cancelling a waiting task does not un-send its command: the reply is just dropped. Callers
  whose write must happen (or must be known to have happened) shield the call
  (``shielded=True``).
* Leaving ``async with`` answers every command already submitted, then closes the connection.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, cast

import hiredis
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
_READ_SIZE: Final = 64 * 1024


class _RawConnection(Protocol):
    """The part of ``redis.connection.Connection`` we use (redis-py leaves it unannotated).

    ``_sock`` is redis-py's own attribute: the socket it connected and authenticated.
    """

    _sock: Any
    socket_timeout: float | None

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BridgeStatistics:
    """Counters since the bridge started: commands written, pipelined writes, biggest write."""

    commands_sent: int = 0
    round_trips: int = 0
    largest_batch: int = 0


class _Submission:
    """One caller's contiguous commands; the I/O task fills in the outcome and wakes the caller.

    The caller parks on trio's low-level wait and is rescheduled directly (a trio.Event, and
    a CancelScope for shielded callers, cost more than the rest of a submission's trip).
    """

    __slots__ = ("count", "failure", "payload", "replies", "task")

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload = payload  # the commands, packed in the caller's task
        self.count = count  # how many replies they get
        self.replies: list[Any] = []
        self.failure: BaseException | None = None
        # Created in the caller's task; None once nobody waits (a cancelled caller).
        self.task: trio.lowlevel.Task | None = trio.lowlevel.current_task()

    def abort(self, _: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def outcome(self) -> list[Any]:
        """The replies, once the I/O task has woken the caller; raises if the batch failed."""
        if self.failure is not None:
            message = f"Redis connection failed: {self.failure}"
            raise RedisUnavailableError(message) from self.failure
        return self.replies


def _keep_waiting(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # a shielded wait: the answer wakes us; Cancelled comes after


def _prepare(command: Sequence[Arg]) -> bytes:
    """Check one command in the caller's task and pack it (RESP) there.

    Bad input must fail its own caller here: once in the I/O task it would break the whole batch.
    """
    if not command:
        raise ValueError("empty Redis command")
    name = command[0]
    if isinstance(name, str | bytes):
        upper = (name.decode("latin-1") if isinstance(name, bytes) else name).upper()
        if upper in _REFUSED:
            raise ValueError(f"{upper} cannot be sent through the shared RedisBridge connection")
    return _pack_args(command)


def _pack_args(command: Sequence[Arg]) -> bytes:
    try:
        # hiredis takes exact str (encoded strictly as UTF-8: a lone surrogate raises
        # UnicodeEncodeError right here), bytes, int and float, and refuses the rest.
        return _pack(command if type(command) is tuple else tuple(command))
    except TypeError:
        return _pack(_plain(command))


def _plain(command: Sequence[Arg]) -> tuple[bytes | int | float, ...]:
    """The arguments as the exact types hiredis packs (subclasses such as an IntEnum too)."""
    out: list[bytes | int | float] = []
    for arg in command:
        if isinstance(arg, str):
            out.append(str.encode(arg))
        elif isinstance(arg, bytes | float):
            out.append(bytes(arg) if isinstance(arg, bytes) else float(arg))
        elif isinstance(arg, int) and not isinstance(arg, bool):
            out.append(int(arg))
        else:
            raise TypeError(f"Redis argument must be str, bytes, int or float, not {arg!r}")
    return tuple(out)


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
    """Async front of one Redis connection, its I/O run by one trio task (see module doc)."""

    def __init__(self, url: str | RedisTarget, *, name: str = "patient-sidekiq-redis") -> None:
        # protocol=2 keeps replies raw and plain (bytes, int, list, None); redis-py 8 defaults to
        # RESP3 (dicts, sets, push messages). A ``protocol`` in the URL's query still wins.
        self._pool = as_target(url).connection_pool(protocol=2)
        self._name = name
        self._connection: _RawConnection | None = None
        self._reader = _new_reader()
        self._outbox: list[_Submission] = []
        self._io_parked: trio.lowlevel.Task | None = None  # the I/O task, waiting for work
        self._stats = BridgeStatistics()
        self._started = False
        self._stopped = trio.Event()
        self._closed = False
        # Batches failed with "outcome unknown", read by the launcher's reconcile loop to
        # notice lost replies.
        self._failures = 0
        # trio clock times, read by the health endpoint: the heartbeat's commands go
        # through here every few seconds, so a recent success means Redis answers us.
        self._answered_at: float | None = None
        self._failed_at: float | None = None
        self._last_failure = ""

    async def __aenter__(self) -> RedisBridge:
        if self._started or self._closed:
            raise RuntimeError("a RedisBridge can only be started once")
        self._started = True
        self._connection = cast(_RawConnection, self._pool.make_connection())
        # A system task: bridges are entered and left in any order, which nurseries forbid.
        trio.lowlevel.spawn_system_task(self._io_loop, name=self._name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._started or self._closed:
            return
        self._closed = True  # nothing can be queued after this
        self._wake_io()
        # Shielded: pending commands are answered (or failed) before we return, never abandoned.
        with trio.CancelScope(shield=True):
            await self._stopped.wait()
        self._pool.disconnect()

    @property
    def failures(self) -> int:
        """How many batches failed with :class:`RedisUnavailableError` since the start.

        Each is a set of commands whose outcome is unknown; a change tells the worker to
        reconcile its own records once Redis answers again.
        """
        return self._failures

    @property
    def answered_at(self) -> float | None:
        """``trio.current_time()`` when the last batch got every reply (None: none yet)."""
        return self._answered_at

    @property
    def last_failure(self) -> tuple[float, str] | None:
        """When the last batch failed with :class:`RedisUnavailableError`, and why."""
        return None if self._failed_at is None else (self._failed_at, self._last_failure)

    def statistics(self) -> BridgeStatistics:
        """Return a snapshot of the counters."""
        return self._stats

    async def execute(self, *args: Arg, shielded: bool = False) -> Any:
        """Send one command; return its raw reply, or raise :class:`RedisCommandError`.

        ``shielded``: a cancellation does not interrupt the wait for the reply (it takes
        effect at the caller's next checkpoint), so the caller always learns the outcome,
        as inside a shielded CancelScope.
        """
        submission = self._submit(_prepare(args), 1)
        await trio.lowlevel.wait_task_rescheduled(_keep_waiting if shielded else submission.abort)
        (reply,) = submission.outcome()
        if isinstance(reply, RedisCommandError):
            raise reply
        return reply

    async def evalsha(
        self, sha: str, script_keys: Sequence[Arg], args: Sequence[Arg], *, shielded: bool = False
    ) -> Any:
        """``EVALSHA sha len(script_keys) *script_keys *args``: :meth:`execute` without the
        checks an EVALSHA never needs (what :class:`~.lua.LuaScript` runs, twice per job)."""
        command = ("EVALSHA", sha, len(script_keys), *script_keys, *args)
        submission = self._submit(_pack_args(command), 1)
        await trio.lowlevel.wait_task_rescheduled(_keep_waiting if shielded else submission.abort)
        (reply,) = submission.outcome()
        if isinstance(reply, RedisCommandError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send several commands back to back, in order, NOT atomically.

        Error replies come back as :class:`RedisCommandError` instances in the list, not raised.
        """
        if not commands:
            return []
        submission = self._submit(b"".join([_prepare(c) for c in commands]), len(commands))
        await trio.lowlevel.wait_task_rescheduled(submission.abort)
        return submission.outcome()

    async def transaction(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Run the commands in MULTI ... EXEC (one write) and return EXEC's reply list.

        Raises :class:`RedisCommandError` if Redis refuses to queue a command (EXECABORT).
        Runtime errors of single commands (WRONGTYPE …) are instances inside the list.
        """
        if not commands:
            return []
        packed = [_MULTI, *[_prepare(command) for command in commands], _EXEC]
        submission = self._submit(b"".join(packed), len(packed))
        await trio.lowlevel.wait_task_rescheduled(submission.abort)
        replies = submission.outcome()
        result = replies[-1]
        if isinstance(result, RedisCommandError):
            refused = [str(r) for r in replies[1:-1] if isinstance(r, RedisCommandError)]
            raise RedisCommandError("; ".join([str(result), *refused]))
        if not isinstance(result, list):  # None: only a WATCH could abort, and we refuse WATCH
            raise RedisCommandError(f"transaction aborted: EXEC replied {result!r}")
        return result

    def _submit(self, payload: bytes, count: int) -> _Submission:
        """Queue packed commands; the caller waits on trio's trap itself (no coroutine here)."""
        if self._closed:
            raise RedisUnavailableError("bridge is closed")
        if not self._started:
            raise RuntimeError("use the RedisBridge inside 'async with' first")
        submission = _Submission(payload, count)
        self._outbox.append(submission)  # from here on the command WILL be sent, cancelled or not
        self._wake_io()
        return submission

    # --- the I/O task ---

    def _wake_io(self) -> None:
        task, self._io_parked = self._io_parked, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def _io_loop(self) -> None:
        try:
            while self._outbox or not self._closed:
                if not self._outbox:
                    await self._park()
                    continue
                batch, self._outbox = self._outbox, []
                await self._round_trip(batch)
        finally:
            # Also on trio's shutdown (the only cancellation a system task gets): whatever
            # is still queued is failed rather than left waiting.
            leftover, self._outbox = self._outbox, []
            for submission in leftover:
                submission.failure = RedisUnavailableError("bridge stopped")
            _answer(leftover)
            self._disconnect()
            self._stopped.set()

    async def _park(self) -> None:
        self._io_parked = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._io_parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _round_trip(self, batch: list[_Submission]) -> None:
        count = sum([submission.count for submission in batch])
        answered = 0  # submissions whose every reply arrived
        failure: BaseException | None = None
        try:
            sock, timeout = await self._socket()
            with trio.move_on_after(timeout) as scope:
                await _send_all(sock, b"".join([submission.payload for submission in batch]))
                sent = self._stats
                self._stats = BridgeStatistics(
                    sent.commands_sent + count,
                    sent.round_trips + 1,
                    max(sent.largest_batch, count),
                )
                reader = self._reader
                for submission in batch:
                    replies = []
                    for _ in range(submission.count):
                        reply = reader.gets()
                        if reply is False:  # hiredis: not enough data yet (no RESP2 reply is)
                            reply = await self._reply(sock)
                        replies.append(reply)
                    submission.replies = replies
                    answered += 1
            if scope.cancelled_caught:
                failure = TimeoutError("Timeout reading from socket")
        except Exception as exc:  # refused, reset, a protocol error, or anything unexpected
            failure = exc
        if failure is not None:
            for submission in batch[answered:]:
                submission.replies = []
                submission.failure = failure
            self._disconnect()  # never resent; the next batch starts on a fresh socket
            self._failures += 1
            self._failed_at = trio.current_time()
            self._last_failure = str(failure) or type(failure).__name__
        else:
            self._answered_at = trio.current_time()
        _answer(batch)

    async def _socket(self) -> tuple[Any, float]:
        """The connected socket (connecting first if needed) and the time a batch may take."""
        connection = self._connection
        assert connection is not None
        sock = connection._sock
        if sock is None:
            # redis-py connects and authenticates (blocking): in a worker thread.
            await trio.to_thread.run_sync(connection.connect)
            sock = cast(Any, connection)._sock
            sock.setblocking(False)
            self._reader = _new_reader()
        return sock, connection.socket_timeout or math.inf

    async def _reply(self, sock: Any) -> Any:
        reader = self._reader
        reply = reader.gets()
        while reply is False:  # hiredis: not enough data yet (no RESP2 reply is False)
            data = await _receive_some(sock)
            if not data:
                raise ConnectionError("Connection closed by server.")
            reader.feed(data)
            reply = reader.gets()
        return reply

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.disconnect()


# hiredis' stub types the command as a 1-tuple; it takes any tuple of these.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)
_MULTI: Final = _pack(("MULTI",))
_EXEC: Final = _pack(("EXEC",))


def _new_reader() -> hiredis.Reader:
    # Error replies (nested ones too) come back as RedisCommandError with Redis's own text.
    return hiredis.Reader(replyError=RedisCommandError)


def _answer(batch: list[_Submission]) -> None:
    """Wake every waiter of one batch that still waits."""
    for submission in batch:
        task = submission.task
        if task is not None:
            submission.task = None
            trio.lowlevel.reschedule(task)


async def _send_all(sock: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (BlockingIOError, ssl.SSLWantWriteError):
            await trio.lowlevel.wait_writable(sock)
        except ssl.SSLWantReadError:  # TLS renegotiation
            await trio.lowlevel.wait_readable(sock)


async def _receive_some(sock: Any) -> bytes:
    # Always try first: TLS may hold decrypted bytes while the socket is not readable.
    while True:
        try:
            return cast(bytes, sock.recv(_READ_SIZE))
        except (BlockingIOError, ssl.SSLWantReadError):
            await trio.lowlevel.wait_readable(sock)
        except ssl.SSLWantWriteError:
            await trio.lowlevel.wait_writable(sock)
