"""Hostile job text: whatever the fetch accepts, the worker can file (issue 13).

Jobs come from Redis, where anybody may have written anything: text that is not JSON,
JSON that is not an object, numbers past the float range (``1e400`` parses to infinity),
lone ``\\ud800`` escapes, bytes that are not UTF-8 (kept by the fetch with
``surrogateescape``), nesting deeper than any parser should follow, 10 MB strings. Such a
job must end like every other one: in ``retry`` or ``dead`` with ``error_class`` and
``error_message`` (Ruby class names only), its original text preserved, and the worker
still running.

The rule, applied by :func:`dead_entry` (every loop that ends a job falls back to it):

1. **The text parses to an object** (``rubyjson.loads``, nesting at most
   :data:`MAX_NESTING`): the error fields are set on it as Sidekiq's JobRetry sets them and
   it is written with ``rubyjson.dumps``. If the object cannot be written again (infinity,
   lone surrogates, invalid bytes), the error fields are **spliced into the original text**
   instead: ``,"error_class":…,"error_message":…,"failed_at":…,"retry_count":0`` before its
   closing ``}``. Every original byte is kept; JSON readers (Ruby's and ours) take the last
   of duplicate keys, so the spliced fields win over older ones.
2. **Anything else** (not JSON, not an object, too deep): a new job wraps it, the original
   text in ``patient_sidekiq_raw`` (a JSON string; ``patient_sidekiq_raw_base64`` with the
   original bytes when they are not valid UTF-8), ``class`` ``PatientSidekiq::InvalidJob``,
   ``args`` ``[]``, ``retry`` ``0`` (a "Retry now" from the Web UI lands it in ``dead``
   again instead of discarding it).

Such entries always go to ``dead``: a job that cannot be written again cannot be retried
either (the poller re-pushes with a fresh ``enqueued_at``), and one that cannot be parsed
will never run.

Limits: :data:`MAX_NESTING` = 100 levels, Ruby ``JSON.parse``'s default ``max_nesting``
(Sidekiq itself could not load a deeper job, and Ruby's ``JSON.generate`` cannot write
one); deeper text is an invalid job (``JSON::NestingError``). There is no size limit of our
own: a job is bounded by Redis (512 MB per string); 10 MB jobs are filed like others.

No Redis keys: this module builds text and commands; callers send them with the job's
acknowledgement (see :class:`~patient_sidekiq.sidekiq.fetch.UnitOfWork`).
"""

from __future__ import annotations

import base64
import re
from typing import Any, Final

from patient_sidekiq.errors import InvalidJobError, InvalidJsonError, NotJsonNativeError
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.ruby.rubyjson import MAX_NESTING, nesting_exceeds
from patient_sidekiq.sidekiq.job import Job, new_jid, stamp
from patient_sidekiq.sidekiq.retry import (
    MAX_ERROR_MESSAGE,
    FailureOutcome,
    RetryPolicy,
    bury_commands,
    failure_commands,
    prepare_failure,
)

__all__ = [
    "CONTENT_ERRORS",
    "INVALID_JOB_CLASS",
    "MAX_NESTING",
    "content_error",
    "dead_entry",
    "dead_entry_commands",
    "encode_raw",
    "filing_commands",
    "nesting_exceeds",
]


INVALID_JOB_CLASS: Final = "PatientSidekiq::InvalidJob"
"""The ``class`` of the entry wrapping text that is not a job object."""

CONTENT_ERRORS: Final = (NotJsonNativeError, InvalidJsonError, UnicodeError, RecursionError)
"""Exceptions a job's content (not Redis, not our state) can raise while it is re-encoded."""

_JSON_SPACE: Final = " \t\n\r"
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def encode_raw(text: str) -> bytes:
    """The exact bytes of a job text decoded by the fetch (``surrogateescape``)."""
    return text.encode("utf-8", "surrogateescape")


def content_error(error: BaseException) -> tuple[str, str]:
    """The Ruby class name and message for a failure caused by a job's content.

    Ruby's names for the same faults: ``JSON::GeneratorError`` (a value JSON cannot write),
    ``JSON::ParserError``, ``ArgumentError`` (``invalid byte sequence in UTF-8``),
    ``SystemStackError`` (``stack level too deep``); a class that names its Ruby twin keeps it.
    """
    named = getattr(type(error), "ruby_class_name", None)
    if isinstance(named, str) and named:
        return named, str(error)
    if isinstance(error, NotJsonNativeError):
        return "JSON::GeneratorError", str(error)
    if isinstance(error, InvalidJsonError):
        return "JSON::ParserError", str(error)
    if isinstance(error, UnicodeError):
        return "ArgumentError", f"invalid byte sequence in UTF-8 ({error})"
    if isinstance(error, RecursionError):
        return "SystemStackError", "stack level too deep"
    return "RuntimeError", f"{type(error).__name__}: {error}"


def _scrub(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def _load_object(raw: str) -> dict[str, Any] | None:
    if nesting_exceeds(raw):
        return None
    try:
        data = rubyjson.loads(raw)
    except InvalidJsonError:
        return None
    return data if isinstance(data, dict) else None


def dead_entry(raw: str, error_class: str, message: str, *, queue: str, policy: RetryPolicy) -> str:
    """The text to file in ``dead`` for job text ``raw`` that failed with the given error.

    Never raises for any ``raw``: the module docstring has the rule.
    """
    fields: dict[str, Any] = {
        "error_class": error_class,
        "error_message": _scrub(message[:MAX_ERROR_MESSAGE]),
        "failed_at": stamp(policy.dialect, policy.clock()),
        "retry_count": 0,
    }
    data = _load_object(raw)
    if data is not None:
        merged = {**data, **fields}
        if not isinstance(merged.get("queue"), str) or not merged["queue"]:
            merged["queue"] = queue
        try:
            return rubyjson.dumps(merged)
        except (NotJsonNativeError, RecursionError):
            head = raw.rstrip(_JSON_SPACE)[:-1].rstrip(
                _JSON_SPACE
            )  # the object without its closing brace
            tail = rubyjson.dumps(fields)[1:-1]
            return f"{head}{'' if head.endswith('{') else ','}{tail}}}"
    wrapper: dict[str, Any] = {
        "class": INVALID_JOB_CLASS,
        "args": [],
        "queue": queue,
        "jid": new_jid(),
        "retry": 0,
        **fields,
    }
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        wrapper["patient_sidekiq_raw_base64"] = base64.b64encode(encode_raw(raw)).decode("ascii")
    else:
        wrapper["patient_sidekiq_raw"] = raw
    return rubyjson.dumps(wrapper)


def dead_entry_commands(
    raw: str, error_class: str, message: str, *, queue: str, policy: RetryPolicy
) -> list[tuple[Any, ...]]:
    """The dead-set MULTI commands (add and trim) for :func:`dead_entry`, as exact bytes."""
    entry = dead_entry(raw, error_class, message, queue=queue, policy=policy)
    commands = bury_commands(entry, policy)
    # bury_commands writes the text as str; the bridge would encode it strictly.
    first = commands[0]
    return [(*first[:-1], encode_raw(entry)), *commands[1:]]


def filing_commands(
    job: Job,
    error: BaseException | tuple[str, str, list[str]],
    *,
    raw: str,
    queue: str,
    policy: RetryPolicy,
    default_backtrace: bool | int | None = None,
) -> tuple[FailureOutcome | None, list[tuple[Any, ...]]]:
    """File a failed ``job`` as Sidekiq would, or into ``dead`` by :func:`dead_entry`.

    ``raw`` is the job's original text (the fetched bytes). A failure caused by content
    (see :func:`content_error`) is named by its Ruby class. When the filed job cannot be
    written (Sidekiq's bookkeeping re-encodes it), the job goes to ``dead`` with the
    failure's class and message spliced in; the outcome is then ``None``. Never raises for
    any content of ``job``. ``default_backtrace``: see :func:`prepare_failure`.
    """
    if isinstance(error, CONTENT_ERRORS):
        error = (*content_error(error), [])
    try:
        outcome = prepare_failure(
            job, error, queue=queue, policy=policy, default_backtrace=default_backtrace
        )
        return outcome, failure_commands(outcome, policy)
    except (*CONTENT_ERRORS, InvalidJobError):
        name, message = error[:2] if isinstance(error, tuple) else content_error(error)
        return None, dead_entry_commands(raw, name, message, queue=queue, policy=policy)
