"""The Sidekiq job hash: parsed fields plus the exact JSON text they came from.

Redis keys touched: none (this module only reads and writes job JSON; see protocol spec §1).

Sidekiq removes and requeues jobs by their exact text (``LREM``, ``ZREM``, ``RPUSH`` of the
raw string), so a :class:`Job` keeps the text it was parsed from and hands it back unchanged
until a field is changed. Changes keep Ruby's hash order: existing keys stay where they are,
new keys go at the end, exactly as ``msg["k"] = v`` does in Ruby.
"""

from __future__ import annotations

import copy
import enum
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from patient_sidekiq.errors import InvalidJobError, InvalidJsonError
from patient_sidekiq.ruby import rubyjson

__all__ = ["Job", "TimestampDialect", "new_jid", "read_time", "stamp"]

DEFAULT_QUEUE: Final = "default"


class TimestampDialect(enum.Enum):
    """How timestamps inside the job JSON are written (protocol spec §1.2, §8).

    Scores of the ``schedule``/``retry``/``dead`` sets are float seconds in every version;
    only the fields inside the JSON (``created_at``, ``enqueued_at``, ``failed_at`` …) differ.
    """

    SECONDS = "seconds"
    """Sidekiq 6.5 / 7.x: float epoch seconds, always written with a decimal point."""
    MILLIS = "millis"
    """Sidekiq 8.x: integer epoch milliseconds."""


def stamp(dialect: TimestampDialect, now: float) -> float | int:
    """Return the epoch time ``now`` (seconds) as ``dialect`` writes it into a job."""
    if dialect is TimestampDialect.MILLIS:
        # Ruby's clock_gettime(..., :millisecond) truncates.
        return int(now * 1000)
    # A Python float always serialises with a decimal point or exponent, which is what
    # 8.x readers use to tell seconds from milliseconds.
    return float(now)


def read_time(value: Any) -> float | None:
    """Return a job timestamp as epoch seconds, deciding the unit by JSON number type.

    A float is seconds, an integer is milliseconds (Sidekiq 8.x ``time_for``); anything else
    (``None``, a string, a boolean) is not a timestamp and gives ``None``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return value / 1000
    return None


def new_jid() -> str:
    """Return a fresh job id: 24 lowercase hex characters, like ``SecureRandom.hex(12)``."""
    # What secrets.token_hex(12) returns (the OS's CSPRNG), without its two Python frames:
    # one jid per callback job.
    return os.urandom(12).hex()


def _validate(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidJobError(f"job must be a JSON object, not {type(data).__name__}", "TypeError")
    class_name = data.get("class")
    if not isinstance(class_name, str) or not class_name:
        # Ruby: constantize of nil/"" (or a non-string) fails to name a class.
        raise InvalidJobError(
            f"uninitialized constant {class_name!r} (job must have a non-empty string 'class')",
            "NameError",
        )
    if not isinstance(data.get("args"), list):
        raise InvalidJobError("job must have an array 'args'", "ArgumentError")
    return data


class Job:
    """One Sidekiq job: its fields and the JSON text that carries them.

    Instances are immutable by convention: :meth:`with_fields` and :meth:`without` return
    new jobs. :attr:`data` is a read-only view; nested values (``args`` …) are shared, so
    callers must not mutate them (use :meth:`to_dict` for a private deep copy).
    """

    __slots__ = ("_data", "_raw")

    def __init__(self, data: dict[str, Any], raw: str) -> None:
        """Wrap an already validated dict and its text; prefer :meth:`parse` or :meth:`new`."""
        self._data = data
        self._raw = raw

    @classmethod
    def parse(cls, raw: str | bytes) -> Job:
        """Parse job JSON, keeping the text for byte-exact re-serialisation.

        Raises :class:`InvalidJobError` for non-JSON, a non-object, a missing or empty
        ``class`` or an ``args`` that is not an array.
        """
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidJobError(f"job is not UTF-8: {exc}") from exc
        if rubyjson.nesting_exceeds(raw):
            # Ruby's JSON.parse stops at the same depth; so does every re-encoding here.
            raise InvalidJobError(
                f"nesting of {rubyjson.MAX_NESTING + 1} is too deep", "JSON::NestingError"
            )
        try:
            data = rubyjson.loads(raw)
        except InvalidJsonError as exc:
            raise InvalidJobError(str(exc)) from exc
        return cls(_validate(data), raw)

    @classmethod
    def new(
        cls,
        class_name: str,
        args: list[Any],
        *,
        queue: str = DEFAULT_QUEUE,
        retry: bool | int = True,
        jid: str | None = None,
        **extra: Any,
    ) -> Job:
        """Build a job the way Sidekiq's client normalises one.

        Key order follows the Ruby client (defaults ``retry``/``queue`` first, then the
        item, then ``jid``); ``extra`` keys follow. ``created_at``/``enqueued_at`` are set
        by :class:`~patient_sidekiq.sidekiq.client.SidekiqClient` at push time.
        """
        data: dict[str, Any] = {"retry": retry, "queue": queue, "args": args, "class": class_name}
        data["jid"] = jid if jid is not None else new_jid()
        data.update(extra)
        _validate(data)
        return cls(data, rubyjson.dumps(data))

    @property
    def raw(self) -> str:
        """The JSON text: the original bytes if unchanged, else Ruby-identical output."""
        return self._raw

    @property
    def data(self) -> Mapping[str, Any]:
        """A read-only view of the fields (do not mutate nested values)."""
        return MappingProxyType(self._data)

    def to_dict(self) -> dict[str, Any]:
        """Return a deep copy of the fields that the caller may change freely."""
        return copy.deepcopy(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the field ``key`` or ``default``."""
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def with_fields(self, **changes: Any) -> Job:
        """Return a new job with ``changes`` applied (existing keys keep their position).

        Raises :class:`InvalidJobError` if the change breaks ``class``/``args``, and
        :class:`~patient_sidekiq.errors.NotJsonNativeError` for values JSON cannot carry.
        """
        if not changes:
            return self
        data = dict(self._data)
        data.update(changes)
        return Job(_validate(data), rubyjson.dumps(data))

    def without(self, *keys: str) -> Job:
        """Return a new job without the given keys (``self`` if none of them is present)."""
        if not any(key in self._data for key in keys):
            return self
        data = {key: value for key, value in self._data.items() if key not in keys}
        return Job(_validate(data), rubyjson.dumps(data))

    @property
    def class_name(self) -> str:
        """The job class name (``class``)."""
        return str(self._data["class"])

    @property
    def args(self) -> list[Any]:
        """The positional arguments (``args``); shared, do not mutate."""
        args: list[Any] = self._data["args"]
        return args

    @property
    def queue(self) -> str | None:
        """The queue name, or ``None`` if absent or not a non-empty string."""
        value = self._data.get("queue")
        return value if isinstance(value, str) and value else None

    @property
    def jid(self) -> str | None:
        """The job id, or ``None`` if absent or not a string."""
        value = self._data.get("jid")
        return value if isinstance(value, str) else None

    @property
    def retry(self) -> Any:
        """The ``retry`` option as stored: ``True``, ``False``, an int, or ``None`` if absent."""
        return self._data.get("retry")

    @property
    def retry_count(self) -> int | None:
        """How many retries have failed (0 after the first failure); ``None`` before any."""
        value = self._data.get("retry_count")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def retry_queue(self) -> str | None:
        """The queue retries go to, if the job names one."""
        value = self._data.get("retry_queue")
        return value if isinstance(value, str) and value else None

    @property
    def created_at(self) -> float | None:
        """``created_at`` in epoch seconds, whichever unit it was written in."""
        return read_time(self._data.get("created_at"))

    @property
    def enqueued_at(self) -> float | None:
        """``enqueued_at`` in epoch seconds, whichever unit it was written in."""
        return read_time(self._data.get("enqueued_at"))

    @property
    def failed_at(self) -> float | None:
        """``failed_at`` in epoch seconds, whichever unit it was written in."""
        return read_time(self._data.get("failed_at"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"Job({self._raw!r})"
