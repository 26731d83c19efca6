"""One stream of an HTTP/2 connection (:mod:`~patient_sidekiq.http.http2_connection`): what
the connection's reader delivered for it and the request task waiting on it, and the
failures raised in requests.

A request sleeps on its own stream only, parked without a cancel scope or an event object
of its own (trio's lowlevel parking: the reader reschedules exactly that task). A
:class:`Failure` is kept as a class, a text and a cause, so each request it reaches raises
a fresh exception chained to the cause (``http/ruby_errors.py`` reads the chain), never one
object raised in several tasks.

Touches no Redis keys.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import httpx
import trio

__all__ = ["Failure", "Refused", "Stream"]

_TimeoutClass = type[httpx.ReadTimeout] | type[httpx.WriteTimeout]


class Failure:
    """How a stream or connection broke; raised afresh (with its cause) in each request."""

    __slots__ = ("cause", "kind", "refused", "text")

    def __init__(
        self, kind: type[Exception], text: str, cause: BaseException | None = None
    ) -> None:
        self.kind = kind
        self.text = text
        self.cause = cause
        self.refused = False

    def exception(self) -> Exception:
        exc = Refused(self) if self.refused else self.kind(self.text)
        if self.cause is not None:
            exc.__cause__ = self.cause
        return exc


class Refused(Exception):
    """A GOAWAY said the server never processed this stream: it may be sent again."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.text)
        self.failure = failure


class Stream:
    """One request's stream: what the reader delivered, and the task waiting for it."""

    __slots__ = (
        "chunks", "consumed", "ended", "failure", "headers", "id", "sent", "unacked", "waiter",
    )  # fmt: skip

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.chunks: deque[bytes] = deque()
        self.ended = False  # the response ended (END_STREAM)
        self.sent = False  # our request ended
        self.failure: Failure | None = None
        self.waiter: trio.lowlevel.Task | None = None
        self.unacked = 0  # flow-controlled bytes received, not yet given back to the server
        self.consumed = 0  # of those, read by the request since the last acknowledgement

    def wake(self) -> None:
        task = self.waiter
        if task is not None:
            self.waiter = None
            trio.lowlevel.reschedule(task)

    async def wait(self, timeout: float, on_timeout: _TimeoutClass) -> None:
        """Sleep until the reader wakes this stream, at most ``timeout`` seconds."""
        deadline = trio.current_time() + timeout
        if deadline >= trio.current_effective_deadline():
            await self._park()  # the caller's deadline comes first: no scope of our own
            return
        with trio.CancelScope(deadline=deadline):
            await self._park()
            return
        raise on_timeout("Timed out waiting for the server")

    async def _park(self) -> None:
        self.waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED
