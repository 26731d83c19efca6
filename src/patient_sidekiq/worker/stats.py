"""Running totals the gem's Sidekiq Web tab reads (wire spec §8).

Redis keys touched: ``sidekiq:patient_http:totals`` (HINCRBY, HINCRBYFLOAT, EXPIRE, HGETALL).

Fields: ``requests`` and ``duration`` (float seconds) per finished request or followed
redirect hop, ``http_status:<code>`` when there was a response, ``errors`` and
``errors:<kind>`` per error, ``max_capacity_exceeded`` per refused request. Every update
re-arms the hash's 30-day TTL inside the same MULTI.

The ``*_commands`` builders are pure, so a caller can batch the stats of many requests
into one transaction (:meth:`Stats.apply`) or append them to a MULTI of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from patient_sidekiq import keys
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge, raise_first_error

__all__ = ["ERROR_KINDS", "TOTALS_TTL", "Stats", "counted_status", "duration_text"]

TOTALS_TTL: Final = 30 * 24 * 3600
"""TTL of the totals hash, seconds (30 days)."""

ERROR_KINDS: Final = frozenset({"http_error", "redirect", "exception"})
"""The ``errors:<kind>`` the gem writes: HttpError, the redirect errors, transport failures."""

Command = tuple[Arg, ...]


def duration_text(duration: float) -> str:
    """The increment HINCRBYFLOAT gets for ``duration``: a negative or non-finite one is 0."""
    seconds = float(duration)
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    return repr(seconds)


def counted_status(status: int) -> bool:
    """Whether ``status`` counts as ``http_status:<code>``: an HTTP status, as the gem does."""
    return 100 <= status < 600


def _expire() -> Command:
    return ("EXPIRE", keys.TOTALS, TOTALS_TTL)


class Stats:
    """Updates ``sidekiq:patient_http:totals`` (``patient-sidekiq status`` reads it, as the
    gem's Web tab does: :mod:`patient_sidekiq.cli.status_collect`)."""

    def __init__(self, bridge: RedisBridge) -> None:
        """Use ``bridge`` (already entered) for every command."""
        self._bridge = bridge

    # --- pure builders ---

    @staticmethod
    def record_request_commands(duration: float, status: int | None) -> list[Command]:
        """Return the commands counting one finished request (or redirect hop).

        ``status`` is counted only when it is an HTTP status (100-599), as the gem does.
        A negative or non-finite duration counts as 0 (HINCRBYFLOAT refuses inf/NaN).
        """
        commands: list[Command] = [
            ("HINCRBY", keys.TOTALS, "requests", 1),
            ("HINCRBYFLOAT", keys.TOTALS, "duration", duration_text(duration)),
        ]
        if status is not None and counted_status(status):
            commands.append(("HINCRBY", keys.TOTALS, f"http_status:{int(status)}", 1))
        commands.append(_expire())
        return commands

    @staticmethod
    def record_error_commands(kind: str) -> list[Command]:
        """Return the commands counting one error of ``kind`` (one of :data:`ERROR_KINDS`)."""
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; expected one of {sorted(ERROR_KINDS)}")
        return [
            ("HINCRBY", keys.TOTALS, "errors", 1),
            ("HINCRBY", keys.TOTALS, f"errors:{kind}", 1),
            _expire(),
        ]

    @staticmethod
    def record_capacity_refusal_commands() -> list[Command]:
        """Return the commands counting one request refused at max capacity."""
        return [("HINCRBY", keys.TOTALS, "max_capacity_exceeded", 1), _expire()]

    # --- writes ---

    async def apply(self, commands: Sequence[Sequence[Arg]]) -> None:
        """Run builder output (possibly many requests' worth) in one MULTI."""
        if not commands:
            return
        raise_first_error(await self._bridge.transaction(commands))

    async def record_capacity_refusal(self) -> None:
        """Count one request refused because the processor was full."""
        await self.apply(self.record_capacity_refusal_commands())
