"""Test modes for apps that enqueue requests: run them inline, or collect them.

Role: what ``Sidekiq::Testing.inline!``/``fake!`` and the gem's ``PatientHttp.inline!`` are
for Ruby apps. While a mode is on, :class:`~patient_sidekiq.client.enqueue.Client` and
:class:`~patient_sidekiq.client.enqueue.AsyncClient` (and the module-level ``get``/``post``/…)
build and check the job exactly as usual but write nothing to Redis:

* :func:`inline` executes the request at once with the real HTTP engine
  (``http_client.execute`` over a ``ShardedTransport``), passes the request and the result
  through their wire form and JSON (so the callback sees exactly what production gives
  it), runs the ``after_completion``/``after_error`` hooks, then the registered Python
  callback's ``on_complete``/``on_error`` (sync or async), and only then returns the
  request id. Exceptions from hooks and callbacks propagate to the caller.
* :func:`fake` appends the jobs to ``jobs``; :meth:`FakeMode.drain` runs them inline.

The mode is process-wide (like Sidekiq's testing modes), so a request enqueued from another
thread of the test is intercepted too. Touches no Redis keys.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from patient_sidekiq.errors import InlineNotPossibleError, UnknownCallbackError
from patient_sidekiq.http.http_client import ExecutionResult, execute
from patient_sidekiq.http.http_transport import ShardedTransport
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.registry.hooks import Hooks, default_hooks
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.wire.failures import load_failure
from patient_sidekiq.wire.request import Request
from patient_sidekiq.wire.response import Response

if TYPE_CHECKING:
    from patient_sidekiq.client.builder import Enqueued

__all__ = [
    "FakeMode",
    "InlineMode",
    "current_mode",
    "disable",
    "fake",
    "fake_mode",
    "inline",
    "inline_mode",
]


def _json_round_trip(wire: dict[str, Any]) -> Any:
    # Through the text, as Redis would carry it: what the callback sees must not depend on
    # Python objects that production would never share.
    return rubyjson.loads(rubyjson.dumps(wire))


def _run_sync(mode: InlineMode, enqueued: Enqueued, registry: CallbackRegistry) -> None:
    if trio.lowlevel.in_trio_run():
        raise InlineNotPossibleError(
            "a synchronous Client cannot run a request inline inside a running trio loop; "
            "use AsyncClient there"
        )
    trio.run(mode.run, enqueued, registry)


@dataclass
class InlineMode:
    """Requests run at once, callbacks called before the enqueue returns.

    ``http`` configures the HTTP engine (timeouts, secrets, preprocessors,
    ``raise_error_responses`` default …); ``hooks`` defaults to the process's default hooks.
    """

    http: HttpSettings = field(default_factory=HttpSettings)
    hooks: Hooks = field(default_factory=lambda: default_hooks)

    def handle(self, enqueued: Enqueued, registry: CallbackRegistry) -> None:
        """Run ``enqueued`` from synchronous code (``trio.run``)."""
        _run_sync(self, enqueued, registry)

    async def handle_async(self, enqueued: Enqueued, registry: CallbackRegistry) -> None:
        """Run ``enqueued`` in the current trio run."""
        await self.run(enqueued, registry)

    async def run(self, enqueued: Enqueued, registry: CallbackRegistry) -> None:
        """Execute the request, then the hooks and the callback; see the module doc."""
        callback_class = registry.get(enqueued.callback_name)
        if callback_class is None:
            # Checked before the request is sent: nothing in this process could call back.
            raise UnknownCallbackError(
                f"callback {enqueued.callback_name!r} is not registered in Python: inline mode "
                "runs Python callbacks only (register it with @patient_sidekiq.callback, or "
                "test the Ruby side in Ruby)"
            )
        request = Request.from_wire(_json_round_trip(enqueued.request.to_wire()))
        async with trio.open_nursery() as connections:  # HTTP/2 readers and writers
            transport = ShardedTransport(self.http, nursery=connections)
            try:
                result = await execute(
                    transport,
                    self.http,
                    request,
                    request_id=enqueued.request_id,
                    callback_args=enqueued.callback_args,
                    raise_error_responses=enqueued.raise_error_responses,
                )
            finally:
                await transport.aclose()
        await self._deliver(result, callback_class())

    async def _deliver(self, result: ExecutionResult, callback: Any) -> None:
        wire = _json_round_trip(result.to_wire())
        if isinstance(result, Response):
            response = Response.from_wire(wire)
            await self.hooks.run_completion(response)
            outcome = callback.on_complete(response)
        else:
            error = load_failure(wire)
            await self.hooks.run_error(error)
            outcome = callback.on_error(error)
        if inspect.isawaitable(outcome):
            await outcome


@dataclass
class FakeMode:
    """Requests are collected instead of pushed: ``jobs`` holds each RequestWorker job.

    :meth:`drain` (or :meth:`drain_async` in trio code) runs the collected requests
    inline, in order, with ``inline``'s settings.
    """

    inline: InlineMode = field(default_factory=InlineMode)
    enqueued: list[tuple[Enqueued, CallbackRegistry]] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        """The collected jobs, oldest first, exactly as they would have been pushed."""
        return [enqueued.job for enqueued, _ in self.enqueued]

    def handle(self, enqueued: Enqueued, registry: CallbackRegistry) -> None:
        """Collect ``enqueued``."""
        self.enqueued.append((enqueued, registry))

    async def handle_async(self, enqueued: Enqueued, registry: CallbackRegistry) -> None:
        """Collect ``enqueued``."""
        self.handle(enqueued, registry)

    def clear(self) -> None:
        """Forget the collected jobs."""
        self.enqueued.clear()

    def drain(self) -> None:
        """Run every collected request inline (and those their callbacks enqueue)."""
        while self.enqueued:
            enqueued, registry = self.enqueued.pop(0)
            _run_sync(self.inline, enqueued, registry)

    async def drain_async(self) -> None:
        """:meth:`drain` inside a running trio loop."""
        while self.enqueued:
            enqueued, registry = self.enqueued.pop(0)
            await self.inline.run(enqueued, registry)


TestMode = InlineMode | FakeMode

# Process-wide on purpose (see the module doc); a stack so modes nest.
_lock = threading.Lock()
_modes: list[TestMode] = []


def current_mode() -> TestMode | None:
    """Return the test mode in effect, or None (requests go to Redis)."""
    with _lock:
        return _modes[-1] if _modes else None


def _push(mode: TestMode) -> TestMode:
    with _lock:
        _modes.append(mode)
    return mode


def _remove(mode: TestMode) -> None:
    with _lock:
        for index in range(len(_modes) - 1, -1, -1):
            if _modes[index] is mode:
                del _modes[index]
                return


def inline_mode(*, http: HttpSettings | None = None, hooks: Hooks | None = None) -> InlineMode:
    """Turn inline mode on until :func:`disable`; return it."""
    mode = InlineMode(
        http=http if http is not None else HttpSettings(),
        hooks=hooks if hooks is not None else default_hooks,
    )
    _push(mode)
    return mode


def fake_mode(*, http: HttpSettings | None = None, hooks: Hooks | None = None) -> FakeMode:
    """Turn fake mode on until :func:`disable`; return it (its ``jobs``, ``drain()``)."""
    mode = FakeMode(
        inline=InlineMode(
            http=http if http is not None else HttpSettings(),
            hooks=hooks if hooks is not None else default_hooks,
        )
    )
    _push(mode)
    return mode


def disable() -> None:
    """Turn every test mode off: requests go to Redis again."""
    with _lock:
        _modes.clear()


@contextmanager
def inline(*, http: HttpSettings | None = None, hooks: Hooks | None = None) -> Iterator[InlineMode]:
    """Run requests inline inside the ``with`` block (``with testing.inline(): …``)."""
    mode = inline_mode(http=http, hooks=hooks)
    try:
        yield mode
    finally:
        _remove(mode)


@contextmanager
def fake(*, http: HttpSettings | None = None, hooks: Hooks | None = None) -> Iterator[FakeMode]:
    """Collect jobs inside the ``with`` block; ``mode.jobs``, ``mode.drain()``."""
    mode = fake_mode(http=http, hooks=hooks)
    try:
        yield mode
    finally:
        _remove(mode)
