"""Callback arguments: the small JSON object handed from the enqueuer to its callback.

The gem accepts only JSON-native values (nil, booleans, strings, integers, floats, arrays
and objects with string keys) so that a Ruby or Python callback receives exactly what was
enqueued; anything else is refused at enqueue time with the path to the bad value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from patient_sidekiq.errors import NotJsonNativeError, WireFormatError

__all__ = ["CallbackArgs", "validate_callback_args"]

_NATIVE = "JSON-native type (None, bool, str, int, float, list or dict)"


# The values parsed JSON holds, by exact type: checked without the general tests below.
_SCALARS = frozenset({str, int, bool, type(None)})


def _check(value: Any, path: str) -> Any:
    if type(value) in _SCALARS or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJsonNativeError(f"{path} must be a finite float, got {value!r}")
        return value
    if isinstance(value, list | tuple):
        return [_check(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        checked: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJsonNativeError(f"{path} dict key must be a str, got {type(key).__name__}")
            checked[key] = _check(item, f"{path}[{key!r}]")
        return checked
    raise NotJsonNativeError(f"{path} must be a {_NATIVE}, got {type(value).__name__}")


def validate_callback_args(args: Mapping[Any, Any] | None) -> dict[str, Any]:
    """Return a checked copy of ``args`` with string keys, as the gem stores it.

    Top-level integer keys become strings (Ruby calls ``to_s`` on them); every nested key
    must already be a string. Raises :class:`NotJsonNativeError` naming the bad value.
    """
    if args is None:
        return {}
    if type(args) is not dict and not isinstance(args, Mapping):
        raise NotJsonNativeError(f"callback_args must be a dict, got {type(args).__name__}")
    checked: dict[str, Any] = {}
    for key, value in args.items():
        # A str key and a scalar value (parsed JSON, nearly always) need no further test.
        if type(key) is str:
            checked[key] = value if type(value) in _SCALARS else _check(value, key)
            continue
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise NotJsonNativeError(f"callback_args key must be a str, got {type(key).__name__}")
        name = str(key)
        checked[name] = _check(value, name)
    return checked


class CallbackArgs(Mapping[str, Any]):
    """Read-only view of the callback arguments a callback receives.

    ``args["user_id"]`` raises a ``KeyError`` that lists the available keys, like the gem;
    ``args.fetch("k", default)`` returns a default instead.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        if data is not None and not isinstance(data, Mapping):
            raise WireFormatError(f"callback_args must be an object, got {type(data).__name__}")
        self._data: dict[str, Any] = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(
                f"key not found: {key!r}. Available keys: {', '.join(self._data)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"CallbackArgs({self._data!r})"

    def fetch(self, key: str, default: Any = None) -> Any:
        """Return the value for ``key``, or ``default`` when it is absent."""
        return self._data.get(key, default)

    def to_wire(self) -> dict[str, Any]:
        """Return a copy of the wire object."""
        return dict(self._data)
