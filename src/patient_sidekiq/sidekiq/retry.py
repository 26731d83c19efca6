"""Sidekiq's JobRetry: file a failed job into the ``retry`` set or the morgue (protocol spec §4).

Redis keys touched: ``retry`` (ZADD), ``dead`` (ZADD, ZREMRANGEBYSCORE, ZREMRANGEBYRANK).

Deciding and filing are split: :func:`prepare_failure` is pure (no I/O, injectable clock and
random source) so every rule can be tested exactly; :func:`failure_commands` are the writes
of an outcome, sent by the processor with the job's acknowledgement.

Decision where Ruby depends on the job class: when a job has no ``retry`` key, the Ruby
processor falls back to the class's ``sidekiq_options`` and stores that value in the job.
The gem's worker classes use ``retry: true``, so an absent ``retry`` is treated as ``true``
and ``"retry": true`` is added to the filed job, as Ruby would.

``error_backtrace`` follows the job's ``backtrace`` option exactly as Sidekiq 7.3.10's
JobRetry does (``true``: every line, ``N``: the first N, absent/``false``/``null``: none),
compressed as Sidekiq writes it (JSON, zlib deflate, strict Base64). A job WITHOUT the key
may get ``default_backtrace`` instead, the role Sidekiq's ``default_job_options`` plays for
a Ruby app's classes: the worker passes its ``backtrace`` setting for the jobs it runs Python
callbacks for. Python frames are written as Ruby 3.1 (Debian's Ruby) writes its own,
innermost first: ``/path/file.py:12:in `function'``.
"""

from __future__ import annotations

import base64
import random
import re
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from patient_sidekiq import keys
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import Job, TimestampDialect, stamp

__all__ = [
    "FailureOutcome",
    "RetryPolicy",
    "bury_commands",
    "compress_backtrace",
    "failure_commands",
    "prepare_failure",
    "ruby_backtrace",
]

MAX_ERROR_MESSAGE: Final = 10_000
_SURROGATE = re.compile("[\ud800-\udfff]")
_LEADING_INT = re.compile(r"\s*[+-]?\d+")


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried and buried; the defaults are Sidekiq's.

    ``backoff`` picks the version-specific rules: ``"7"`` (6.5/7.x jitter ``rand(10)·(c+1)``,
    ``retry_for`` OR-ed with the count rule) or ``"8"`` (jitter ``rand(10·(c+1))``,
    ``retry_for`` replaces the count rule, ``discarded_at`` on discard).
    """

    max_retries: int = 25
    dialect: TimestampDialect = TimestampDialect.SECONDS
    backoff: Literal["7", "8"] = "7"
    dead_max_jobs: int = 10_000
    dead_timeout: float = 180 * 24 * 3600
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)


@dataclass(frozen=True)
class FailureOutcome:
    """Where a failed job goes: ``retry`` (at ``score``), ``dead`` (at ``score``) or ``discard``.

    ``job`` carries the updated failure fields; for ``discard`` of a ``retry: false`` job it
    is the job unchanged (Ruby never reaches the retry bookkeeping then).
    """

    kind: Literal["retry", "dead", "discard"]
    job: Job
    score: float | None


def _scrub(text: str) -> str:
    # Lone surrogates cannot be written as UTF-8; Ruby's String#scrub uses U+FFFD likewise.
    return _SURROGATE.sub("\ufffd", text)


def _describe(error: BaseException | tuple[str, str, list[str]]) -> tuple[str, str, list[str]]:
    if isinstance(error, tuple):
        return error
    cls = type(error)
    name = getattr(cls, "ruby_class_name", None) or (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return name, str(error), ruby_backtrace(error)


def ruby_backtrace(error: BaseException) -> list[str]:
    """``error``'s traceback as Ruby's ``Exception#backtrace``: innermost frame first."""
    # ``backtrace: N`` keeps the first N lines, so the order matters as much as the shape.
    # Ruby 3.1 quotes the method `so'; 3.4 'so': the Web UI shows either as it is.
    frames = traceback.extract_tb(error.__traceback__)
    return [f"{frame.filename}:{frame.lineno}:in `{frame.name}'" for frame in reversed(frames)]


def compress_backtrace(lines: list[str]) -> str:
    """Encode backtrace lines as Sidekiq ≥ 7.2.1 does: strict base64 of zlib(JSON array)."""
    return base64.b64encode(zlib.compress(rubyjson.dumps(lines).encode("utf-8"))).decode("ascii")


def _ruby_to_i(value: Any) -> int:
    # ``msg["backtrace"].to_i`` for the non-true values Ruby would accept.
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and (match := _LEADING_INT.match(value)):
        return int(match.group())
    return 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exhausted(job: Job, max_retries: int, now: float, backoff: str) -> bool:
    count = job.retry_count or 0
    retry_for = job.get("retry_for")
    if isinstance(retry_for, int | float) and not isinstance(retry_for, bool):
        failed_at = job.failed_at
        # A job without a readable failed_at cannot trip the time rule (Ruby would crash).
        timed_out = failed_at is not None and failed_at + retry_for < now
        if backoff == "8":  # 8.1: retry_for and retry are mutually exclusive
            return timed_out
        return timed_out or count >= max_retries
    return count >= max_retries


def _jitter(policy: RetryPolicy, count: int) -> int:
    if policy.backoff == "8":
        return policy.rng.randrange(10 * (count + 1))
    return policy.rng.randint(0, 9) * (count + 1)


def prepare_failure(
    job: Job,
    error: BaseException | tuple[str, str, list[str]],
    *,
    queue: str,
    policy: RetryPolicy,
    default_backtrace: bool | int | None = None,
) -> FailureOutcome:
    """Decide what happens to ``job`` after ``error``, exactly as Sidekiq's JobRetry does.

    ``queue`` is the queue the job was fetched from. ``error`` is an exception or an explicit
    ``(error_class, message, backtrace_lines)`` for Ruby-named errors. ``default_backtrace``
    stands for the ``backtrace`` option of a job that has none (see the module docstring).
    Pure: no I/O.
    """
    retry = job.retry
    changes: dict[str, Any] = {}
    if retry is None:  # see the module docstring
        retry = changes["retry"] = True
    if retry is False:  # Ruby: nil/false skip the retry bookkeeping entirely
        return FailureOutcome("discard", job, None)
    now = policy.clock()
    stamped = stamp(policy.dialect, now)
    max_retries = retry if _is_int(retry) else policy.max_retries
    error_class, message, backtrace = _describe(error)

    changes["queue"] = job.retry_queue or queue
    changes["error_message"] = _scrub(message[:MAX_ERROR_MESSAGE])
    changes["error_class"] = error_class
    if job.get("retry_count") is None or job.get("retry_count") is False:  # Ruby truthiness
        changes["failed_at"] = stamped
        count = 0
    else:
        changes["retried_at"] = stamped
        count = (job.retry_count or 0) + 1
    changes["retry_count"] = count
    wanted = job.get("backtrace") if "backtrace" in job else default_backtrace
    if wanted is not None and wanted is not False:
        lines = backtrace if wanted is True else backtrace[0 : _ruby_to_i(wanted)]
        changes["error_backtrace"] = compress_backtrace([_scrub(line) for line in lines])
    updated = job.with_fields(**changes)

    if _exhausted(updated, max_retries, now, policy.backoff):
        if updated.get("dead") is False:
            if policy.backoff == "8":  # 8.0.8+ marks a discarded job
                updated = updated.with_fields(discarded_at=int(now * 1000))
            return FailureOutcome("discard", updated, None)
        return FailureOutcome("dead", updated, float(now))
    delay = count**4 + 15 + _jitter(policy, count)
    return FailureOutcome("retry", updated, float(now + delay))


def _bury_commands(raw: str, now: float, policy: RetryPolicy) -> list[tuple[Any, ...]]:
    # One MULTI, like DeadSet#kill: add, then trim by age and keep at most dead_max_jobs - 1.
    return [
        ("ZADD", keys.DEAD, rubyjson.ruby_float_repr(now), raw),
        (
            "ZREMRANGEBYSCORE",
            keys.DEAD,
            "-inf",
            rubyjson.ruby_float_repr(now - policy.dead_timeout),
        ),
        ("ZREMRANGEBYRANK", keys.DEAD, 0, -policy.dead_max_jobs),
    ]


def failure_commands(outcome: FailureOutcome, policy: RetryPolicy) -> list[tuple[Any, ...]]:
    """Return the commands that file ``outcome``, to run inside one MULTI.

    ``ZADD retry`` for a retry, the dead-set add-and-trim for a death, nothing for a
    discard. Callers append their own acknowledgement so filing and acknowledging are
    one atomic step (a crash can neither lose the job nor leave it both filed and pending).
    """
    if outcome.kind == "discard":
        return []
    score = outcome.score if outcome.score is not None else float(policy.clock())
    if outcome.kind == "retry":
        return [("ZADD", keys.RETRY, rubyjson.ruby_float_repr(score), outcome.job.raw)]
    return _bury_commands(outcome.job.raw, score, policy)


def bury_commands(raw: str, policy: RetryPolicy) -> list[tuple[Any, ...]]:
    """Return the commands that put unparseable job text straight into ``dead``."""
    return _bury_commands(raw, float(policy.clock()), policy)
