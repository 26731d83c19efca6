"""Case-insensitive HTTP headers and secret references (wire spec §2, §2.2).

Header names are stored lowercase, as the gem writes them. A request header value may be
a :class:`SecretRef` instead of a string: only the secret's name travels through Redis,
and the processor resolves it just before sending.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from patient_sidekiq.errors import WireFormatError

__all__ = ["SECRET_KEY", "Headers", "SecretRef", "is_secret_marker"]

SECRET_KEY: Final = "$secret"

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A reference to a secret registered on the processor side, by name."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise WireFormatError("secret name must be a non-empty string")

    def to_wire(self) -> dict[str, str]:
        """Return the marker object the gem writes: ``{"$secret": name}``."""
        return {SECRET_KEY: self.name}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SecretRef:
        """Load a ``{"$secret": name}`` marker."""
        name = data.get(SECRET_KEY)
        if not isinstance(name, str):
            raise WireFormatError(f"secret reference name must be a string, got {name!r}")
        return cls(name)

    def __repr__(self) -> str:
        return f"SecretRef({self.name!r})"


def is_secret_marker(value: object) -> bool:
    """Return whether a wire value is a ``{"$secret": …}`` marker."""
    # A header value is a str nearly always: ruled out without the ABC check.
    if type(value) is str:
        return False
    return isinstance(value, Mapping) and SECRET_KEY in value


class Headers(Mapping[str, V], Generic[V]):
    """An immutable, case-insensitive mapping of header names to values.

    Later duplicates of a name (in any case) replace earlier ones, as in the gem.
    """

    __slots__ = ("_items",)

    def __init__(self, headers: Mapping[str, V] | Iterable[tuple[str, V]] | None = None) -> None:
        items: dict[str, V] = {}
        # The exact-type test first: a dict (the common case) skips the ABC check's cost.
        pairs = (
            headers.items()
            if type(headers) is dict or isinstance(headers, Mapping)
            else (headers or ())
        )
        for name, value in pairs:
            if not isinstance(name, str):
                raise WireFormatError(f"header name must be a string, got {type(name).__name__}")
            items[name.lower()] = value
        self._items = items

    def __getitem__(self, name: str) -> V:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def to_dict(self) -> dict[str, V]:
        """Return the headers as a plain dict (lowercase names), in order."""
        return dict(self._items)

    def merged(self, other: Mapping[str, V]) -> Headers[V]:
        """Return a copy with ``other``'s headers set on top."""
        return Headers([*self._items.items(), *other.items()])

    def without(self, *names: str) -> Headers[V]:
        """Return a copy without the named headers (case-insensitive)."""
        drop = {name.lower() for name in names}
        return Headers([(k, v) for k, v in self._items.items() if k not in drop])
