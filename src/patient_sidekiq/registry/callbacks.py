"""The Python callback registry: which callback classes this worker can run itself.

A callback is a class with ``on_complete(response)`` and ``on_error(error)`` methods, as in
the gem (each may be ``async def``). Registering it, usually with the decorator::

    @patient_sidekiq.callback("Billing::FetchInvoiceCallback")
    class FetchInvoiceCallback:
        def on_complete(self, response): ...
        def on_error(self, error): ...

puts it under the given Ruby-style name AND under its Python path
(``billing.callbacks.FetchInvoiceCallback``), so a CallbackWorker job naming either runs it.
The two kinds of names never collide: a Ruby constant path has no ``.``, a Python path has.

:func:`resolve_callback_name` turns what an enqueuer passes as ``callback`` into the name
written into a RequestWorker job, refusing names that nobody could run.

Touches no Redis keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, TypeVar, overload

from patient_sidekiq.errors import ConfigurationError, UnknownCallbackError

__all__ = [
    "CallbackRegistry",
    "callback",
    "is_ruby_constant_name",
    "python_path",
    "registry",
    "resolve_callback_name",
]

_Class = TypeVar("_Class", bound=type)

# Ruby constants start with an uppercase letter; the gem resolves ``A::B`` segment by
# segment and drops one leading ``::`` (an absolute name).
_RUBY_CONSTANT: Final = re.compile(r"(?:::)?[A-Z][A-Za-z0-9_]*(?:::[A-Z][A-Za-z0-9_]*)*", re.ASCII)
_METHODS: Final = ("on_complete", "on_error")


def is_ruby_constant_name(name: str) -> bool:
    """Return whether ``name`` is a Ruby constant path (``Foo``, ``Foo::Bar``, ``::Foo``)."""
    return _RUBY_CONSTANT.fullmatch(name) is not None


def python_path(cls: type) -> str:
    """Return the name a class is always registered under: ``module.QualName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _canonical(name: str) -> str:
    # ``::Foo`` and ``Foo`` name the same Ruby constant.
    return name[2:] if name.startswith("::") else name


class CallbackRegistry:
    """Callback classes by name: their Ruby-style names and their Python paths.

    A registry is filled at import time (decorators) and only read afterwards, so it needs
    no lock.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}
        self._job_names: dict[type, str] = {}

    def register(self, cls: _Class, name: str | None = None) -> _Class:
        """Register ``cls`` under ``name`` (a Ruby constant path) and its Python path.

        Raises :class:`ConfigurationError` when ``cls`` lacks a callable ``on_complete`` or
        ``on_error``, when ``name`` is not a Ruby constant name, or when a name is already
        taken by another class. Registering the same class again is allowed (a second Ruby
        name becomes an alias; jobs keep using the first one). Returns ``cls``.
        """
        if not isinstance(cls, type):
            raise ConfigurationError(f"a callback must be a class, not {cls!r}")
        missing = [method for method in _METHODS if not callable(getattr(cls, method, None))]
        if missing:
            raise ConfigurationError(
                f"callback {python_path(cls)} must define {' and '.join(missing)} "
                "(on_complete(response) and on_error(error))"
            )
        names = [python_path(cls)]
        if name is not None:
            if not isinstance(name, str) or not is_ruby_constant_name(name):
                raise ConfigurationError(
                    f"callback name {name!r} is not a Ruby class name such as "
                    "'Billing::FetchInvoiceCallback' (the Python path is registered anyway)"
                )
            names.insert(0, _canonical(name))
        for each in names:
            taken = self._classes.get(each)
            if taken is not None and taken is not cls:
                raise ConfigurationError(
                    f"callback name {each!r} is already registered for {python_path(taken)}"
                )
        for each in names:
            self._classes[each] = cls
        self._job_names.setdefault(cls, names[0])
        if name is not None and not is_ruby_constant_name(self._job_names[cls]):
            # A class first registered by its Python path gets its Ruby name now.
            self._job_names[cls] = names[0]
        return cls

    @overload
    def callback(self, name_or_cls: _Class) -> _Class: ...

    @overload
    def callback(self, name_or_cls: str | None = None) -> Callable[[_Class], _Class]: ...

    def callback(self, name_or_cls: type | str | None = None) -> type | Callable[[_Class], _Class]:
        """Class decorator: ``@registry.callback``, ``@registry.callback()`` or
        ``@registry.callback("Billing::FetchInvoiceCallback")``; returns the class unchanged."""
        if isinstance(name_or_cls, type):
            return self.register(name_or_cls)
        name = name_or_cls

        def decorate(cls: _Class) -> _Class:
            return self.register(cls, name)

        return decorate

    def get(self, name: str) -> type | None:
        """Return the class registered under ``name`` (a leading ``::`` is ignored), or None."""
        return self._classes.get(_canonical(name))

    def job_name(self, cls: type) -> str | None:
        """Return the name a RequestWorker job should carry for ``cls``, or None if unknown.

        That is its Ruby-style name if it has one, else its Python path.
        """
        return self._job_names.get(cls)

    def __contains__(self, item: object) -> bool:
        """``"Name" in registry`` (any registered name) or ``SomeClass in registry``."""
        if isinstance(item, str):
            return _canonical(item) in self._classes
        return isinstance(item, type) and item in self._job_names

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._classes)


registry: Final = CallbackRegistry()
"""The default registry, filled by :func:`callback` (``@patient_sidekiq.callback``)."""

callback: Final = registry.callback
"""Register a class in the default registry (see :meth:`CallbackRegistry.callback`)."""


def resolve_callback_name(callback: type | str, registry: CallbackRegistry) -> str:
    """Return the callback name to write into a RequestWorker job.

    A registered class gives its Ruby-style name (else its Python path); a string is kept
    when it is registered or is a Ruby class name (a Ruby process runs it). Anything else
    raises :class:`UnknownCallbackError`, before a request is enqueued that nobody could
    call back.
    """
    if isinstance(callback, type):
        name = registry.job_name(callback)
        if name is None:
            raise UnknownCallbackError(
                f"callback class {python_path(callback)} is not registered in Python "
                "(use @patient_sidekiq.callback)"
            )
        return name
    if not isinstance(callback, str) or not callback:
        raise UnknownCallbackError(f"callback must be a class or a class name, not {callback!r}")
    if callback in registry or is_ruby_constant_name(callback):
        return callback
    raise UnknownCallbackError(
        f"callback {callback!r} is not registered in Python (use @patient_sidekiq.callback) "
        "and is not a Ruby class name"
    )
