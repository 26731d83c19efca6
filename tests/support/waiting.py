"""Polling until something another task or process does is visible.

:func:`eventually` yields to trio between polls (for tests whose own loop runs the thing
awaited); :func:`wait_for` sleeps (for other processes, outside any trio loop).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import trio


async def eventually(
    check: Callable[[], Any],
    seconds: float = 10,
    *,
    what: str | None = None,
    detail: Callable[[], str] = str,
) -> Any:
    """Poll ``check`` until it returns something true; that value.

    At the deadline: :class:`trio.TooSlowError`, or with ``what`` an AssertionError naming
    it, followed by ``detail()`` (say, the tail of a log; nothing by default).
    """
    try:
        with trio.fail_after(seconds):
            while not (value := check()):
                await trio.sleep(0.01)
    except trio.TooSlowError:
        if what is None:
            raise
        raise AssertionError(f"timed out after {seconds} s waiting for {what}{detail()}") from None
    return value


def wait_for(
    check: Callable[[], Any],
    what: str = "the condition",
    seconds: float = 15,
    *,
    process: subprocess.Popen[Any] | None = None,
    detail: Callable[[], str] = str,
) -> Any:
    """Poll ``check`` until it returns something true; that value.

    Fails (AssertionError naming ``what``, then ``detail()``, nothing by default) at the
    deadline, or at once when ``process`` ended, as nothing will change then.
    """
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        ended = process is not None and process.poll() is not None
        if ended or time.monotonic() > deadline:
            state = f"exited {process.returncode}" if ended and process else f"{seconds} s"
            raise AssertionError(f"waiting for {what}: {state}{detail()}")
        time.sleep(0.02)
