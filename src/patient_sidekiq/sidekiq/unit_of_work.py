"""What a fetch hands out: the order queues are tried in, and one fetched job's unit of work.

:class:`UnitOfWork` carries the exact bytes fetch read and builds every command that ends the
job (acknowledge, requeue, file into ``dead``), so no caller re-serialises it.

Keys: a unit's commands name its ``queue:<name>``, its in-progress list and ``dead``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from patient_sidekiq import keys
from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.redis_io.redis_bridge import Arg
from patient_sidekiq.sidekiq.poison import dead_entry_commands
from patient_sidekiq.sidekiq.retry import RetryPolicy

__all__ = ["QueueOrder", "UnitOfWork", "decode_bytes", "encode_text"]


def decode_bytes(raw: bytes) -> str:
    # surrogateescape keeps even non-UTF-8 bytes exact, so LREM/RPUSH find and restore them.
    return raw.decode("utf-8", "surrogateescape")


def encode_text(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class QueueOrder:
    """The order queues are tried in, following Sidekiq's rule.

    Strict when every weight is 0: the configured order, deduplicated. Otherwise weighted: each
    call shuffles a list holding each name ``max(weight, 1)`` times and deduplicates it, so a
    queue comes first with probability weight / total.
    """

    def __init__(self, queues: Sequence[tuple[str, int]], rng: random.Random | None = None) -> None:
        if not queues:
            raise ConfigurationError("at least one queue is required")
        for name, weight in queues:
            if not name or weight < 0:
                raise ConfigurationError(f"invalid queue {name!r} with weight {weight!r}")
        self.names: tuple[str, ...] = tuple(dict.fromkeys(name for name, _ in queues))
        self.strict: bool = all(weight == 0 for _, weight in queues)
        self._pool = [name for name, weight in queues for _ in range(max(weight, 1))]
        self._rng = rng if rng is not None else random.Random()

    def order(self) -> list[str]:
        """Return the queue names in the order to try them for one fetch."""
        if self.strict:
            return list(self.names)
        permuted = list(self._pool)
        self._rng.shuffle(permuted)
        return list(dict.fromkeys(permuted))


@dataclass(frozen=True, slots=True)
class UnitOfWork:
    """One fetched job: its queue, its exact JSON text, and the list it is recorded in.

    The unit ends itself: every command that removes or moves the job (acknowledge,
    requeue, file into ``dead``) is built here from ONE byte form, the bytes the fetch
    read (``raw`` is their ``surrogateescape`` decoding, so even bytes that are not UTF-8
    match again). The processor, the callback worker, the RequestWorker hand-off and the
    poller all end jobs through these commands.
    """

    queue: str
    raw: str
    inprogress_key: str

    @property
    def raw_bytes(self) -> bytes:
        """The job's exact bytes, as fetched."""
        return encode_text(self.raw)

    def acknowledge_command(self) -> tuple[Arg, ...]:
        """LREM of this job from its in-progress list (-1: the oldest, at the right, first)."""
        return ("LREM", self.inprogress_key, -1, self.raw_bytes)

    def requeue_commands(self) -> list[tuple[Arg, ...]]:
        """Back to its queue's right end (the next job popped), out of the in-progress list."""
        raw = self.raw_bytes
        return [("LREM", self.inprogress_key, 1, raw), ("RPUSH", keys.queue(self.queue), raw)]

    def dead_commands(
        self, error_class: str, message: str, policy: RetryPolicy
    ) -> list[tuple[Any, ...]]:
        """File this job into ``dead`` whatever its content (:mod:`.poison`), acknowledged."""
        entry = dead_entry_commands(self.raw, error_class, message, queue=self.queue, policy=policy)
        return [*entry, self.acknowledge_command()]
