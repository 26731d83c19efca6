"""Lifecycle hooks a Python app registers, as the gem's ``after_completion``/``after_error``.

Where they run (wire spec §9): in the CallbackWorker job, after its payload is unpacked and
before the user's callback, so a hook sees exactly what the callback sees and a hook that
raises fails the callback job (Sidekiq retries it), as in the gem. ``on_retries_exhausted``
runs when a CallbackWorker job with result type ``error`` dies after its last retry; a
failure there is logged and swallowed, as the gem does.

Hooks may be plain functions or coroutine functions; they run in the order registered.
A caller may pass a ``context`` dict (what its log lines name: callback, request id …):
while a hook runs, ``context["hook"]`` names it, so a failure is logged with the hook that
raised; ``on_retries_exhausted`` failures are logged here, at ERROR with the traceback.
The callback worker runs plain functions in its worker threads (``in_thread``), like sync
callbacks, so a slow hook never stalls the event loop the HTTP requests share.
Touches no Redis keys.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from patient_sidekiq.wire.failures import HttpError, RedirectError, RequestError
from patient_sidekiq.wire.response import Response

__all__ = [
    "Hooks",
    "after_completion",
    "after_error",
    "default_hooks",
    "hook_name",
    "on_retries_exhausted",
]

log = logging.getLogger(__name__)

Failure = RequestError | HttpError | RedirectError
_Hook = TypeVar("_Hook", bound=Callable[..., Any])
InThread = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a plain function off the event loop and returns its result (e.g. in a thread)."""


def hook_name(hook: Callable[..., Any]) -> str:
    """``module.function`` for a log line (the repr of a function says little more)."""
    module = getattr(hook, "__module__", None)
    name = getattr(hook, "__qualname__", None) or type(hook).__qualname__
    return f"{module}.{name}" if module else name


async def _run_all(
    kind: str,
    hooks: list[Callable[[Any], object]],
    value: Any,
    in_thread: InThread | None,
    context: dict[str, str] | None,
) -> None:
    for hook in hooks:
        if context is not None:
            context["hook"] = f"{kind}:{hook_name(hook)}"
        await _call(hook, value, in_thread)
    if context is not None:
        context.pop("hook", None)  # all passed: a later failure is not theirs


async def _call(hook: Callable[[Any], Any], value: Any, in_thread: InThread | None) -> None:
    if in_thread is None or inspect.iscoroutinefunction(hook):
        outcome = hook(value)
    else:
        outcome = await in_thread(lambda: hook(value))
    if inspect.isawaitable(outcome):
        await outcome


class Hooks:
    """Registries of ``after_completion``, ``after_error`` and ``on_retries_exhausted`` hooks.

    Each registration method works as a decorator and returns the hook unchanged::

        hooks = Hooks()

        @hooks.after_completion
        def count_status(response: Response) -> None:
            statsd.increment(f"patient_http.status.{response.status}")
    """

    def __init__(self) -> None:
        self._completion: list[Callable[[Response], object]] = []
        self._error: list[Callable[[Failure], object]] = []
        self._exhausted: list[Callable[[Failure], object]] = []

    def after_completion(self, hook: _Hook) -> _Hook:
        """Register ``hook(response)`` to run before every ``on_complete`` callback."""
        self._completion.append(hook)
        return hook

    def after_error(self, hook: _Hook) -> _Hook:
        """Register ``hook(error)`` to run before every ``on_error`` callback."""
        self._error.append(hook)
        return hook

    def on_retries_exhausted(self, hook: _Hook) -> _Hook:
        """Register ``hook(error)`` for error-result callback jobs that died."""
        self._exhausted.append(hook)
        return hook

    async def run_completion(
        self,
        response: Response,
        *,
        in_thread: InThread | None = None,
        context: dict[str, str] | None = None,
    ) -> None:
        """Run the ``after_completion`` hooks in order; the first one raising stops them.

        ``in_thread`` runs each plain-function hook (coroutine functions run on the loop);
        without it every hook is called directly. ``context``: see the module docstring.
        """
        await _run_all("after_completion", self._completion, response, in_thread, context)

    async def run_error(
        self,
        error: Failure,
        *,
        in_thread: InThread | None = None,
        context: dict[str, str] | None = None,
    ) -> None:
        """Run the ``after_error`` hooks in order; the first one raising stops them."""
        await _run_all("after_error", self._error, error, in_thread, context)

    async def run_retries_exhausted(
        self,
        error: Failure,
        *,
        in_thread: InThread | None = None,
        context: dict[str, str] | None = None,
    ) -> None:
        """Run every ``on_retries_exhausted`` hook; failures are logged, never raised."""
        where = "".join(f" {key}={value:.200s}" for key, value in (context or {}).items())
        for hook in self._exhausted:
            try:
                await _call(hook, error, in_thread)
            except Exception as exc:
                log.exception(
                    "on_retries_exhausted hook %s failed%s: %s: %.300s",
                    hook_name(hook),
                    where,
                    type(exc).__name__,
                    exc,  # noqa: TRY401 (the line alone must say what failed, e.g. in JSON logs)
                )


default_hooks = Hooks()
"""The hooks ``patient-sidekiq run`` uses: modules loaded with ``-r`` register on it through
the module-level decorators below, as a Ruby app calls ``PatientHttp::Sidekiq.after_completion``."""

after_completion = default_hooks.after_completion
after_error = default_hooks.after_error
on_retries_exhausted = default_hooks.on_retries_exhausted
