"""What an application registers for the worker, as a Ruby app configures the gem in code.

Role: two registries, each filled at import time (a module loaded with ``-r``) and read when
the worker starts (the third thing a Ruby app registers, encryption hooks, is in
:mod:`patient_sidekiq.registry.encryption_hooks`):

* **secrets**, the gem's ``register_secret``: a request carries only ``{"$secret": "name"}``
  in a header or a query param, and the worker resolves the name when it sends the request.
  A value is a string, or a callable called with the name at EACH resolution (sync or
  async), as the gem calls a block, so a rotated token is picked up without a restart.
* **preprocessors**, the gem's ``register_preprocessor``: callables given the
  :class:`~patient_sidekiq.http.settings.OutgoingRequest` after secrets are resolved and the
  send-time headers set, on every hop of a redirect chain (sync or async).

Configuration can add secrets and built-in preprocessors without code (see
:mod:`patient_sidekiq.config.options`); :func:`build_secrets` and
:func:`build_preprocessors` merge both sources for the worker.

Touches no Redis keys.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, overload

from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.http.settings import Preprocessor, SecretValue

__all__ = [
    "PreprocessorRegistry",
    "PreprocessorSpec",
    "SecretRegistry",
    "SecretSpec",
    "build_preprocessors",
    "build_secrets",
    "preprocessors",
    "register_preprocessor",
    "register_secret",
    "secrets",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def _check_name(kind: str, name: object) -> str:
    # The gem keys both registries by name.to_s; an empty name could never be referenced.
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{kind} name must be a non-empty string, not {name!r}")
    return name


class SecretRegistry:
    """Secrets by name; registering a name again replaces it (as the gem does)."""

    def __init__(self) -> None:
        self._values: dict[str, SecretValue] = {}

    @overload
    def register(self, name: str, value: SecretValue) -> None: ...

    @overload
    def register(self, name: str) -> Callable[[_F], _F]: ...

    def register(self, name: str, value: SecretValue | None = None) -> Callable[[_F], _F] | None:
        """Register ``value`` (a string or a callable) under ``name``.

        Without ``value`` this is a decorator for the callable form::

            @patient_sidekiq.register_secret("openai")
            def openai_key(name: str) -> str: ...
        """
        _check_name("secret", name)
        if value is None:

            def decorate(function: _F) -> _F:
                self.register(name, function)
                return function

            return decorate
        if not isinstance(value, str) and not callable(value):
            raise ConfigurationError(
                f"secret {name!r}: the value must be a string or a callable, "
                f"not {type(value).__name__}"
            )
        self._values[name] = value
        return None

    def names(self) -> list[str]:
        """The registered names (never the values)."""
        return sorted(self._values)

    def snapshot(self) -> Mapping[str, SecretValue]:
        """A read-only copy, for a worker being built."""
        return MappingProxyType(dict(self._values))

    def clear(self) -> None:
        """Forget every secret (tests)."""
        self._values.clear()

    def __repr__(self) -> str:
        return f"SecretRegistry(names={self.names()!r})"


class PreprocessorRegistry:
    """Preprocessors by name; registering a name again replaces it (as the gem does)."""

    def __init__(self) -> None:
        self._functions: dict[str, Preprocessor] = {}

    @overload
    def register(self, name: str, function: Preprocessor) -> None: ...

    @overload
    def register(self, name: str) -> Callable[[_F], _F]: ...

    def register(
        self, name: str, function: Preprocessor | None = None
    ) -> Callable[[_F], _F] | None:
        """Register ``function(outgoing_request)`` under ``name`` (or decorate it)."""
        _check_name("preprocessor", name)
        if function is None:

            def decorate(given: _F) -> _F:
                self.register(name, given)
                return given

            return decorate
        if not callable(function):
            raise ConfigurationError(
                f"preprocessor {name!r} must be callable, not {type(function).__name__}"
            )
        _check_arity(name, function)
        self._functions[name] = function
        return None

    def names(self) -> list[str]:
        """The registered names."""
        return sorted(self._functions)

    def snapshot(self) -> Mapping[str, Preprocessor]:
        """A read-only copy, for a worker being built."""
        return MappingProxyType(dict(self._functions))

    def clear(self) -> None:
        """Forget every preprocessor (tests)."""
        self._functions.clear()


def _check_arity(name: str, function: Callable[..., Any]) -> None:
    # The gem refuses, at registration, a callable that cannot take the request: a
    # mistake found at boot instead of on the first request that names it.
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check
    try:
        signature.bind(object())
    except TypeError:
        raise ConfigurationError(
            f"preprocessor {name!r} must accept one argument (the outgoing request)"
        ) from None


# --- the process-wide registries the module-level functions fill ---

secrets: Final = SecretRegistry()
preprocessors: Final = PreprocessorRegistry()


@overload
def register_secret(name: str, value: SecretValue) -> None: ...


@overload
def register_secret(name: str) -> Callable[[_F], _F]: ...


def register_secret(name: str, value: SecretValue | None = None) -> Callable[[_F], _F] | None:
    """Register a secret for every worker of this process (see :class:`SecretRegistry`)."""
    if value is None:
        return secrets.register(name)
    secrets.register(name, value)
    return None


@overload
def register_preprocessor(name: str, function: Preprocessor) -> None: ...


@overload
def register_preprocessor(name: str) -> Callable[[_F], _F]: ...


def register_preprocessor(
    name: str, function: Preprocessor | None = None
) -> Callable[[_F], _F] | None:
    """Register a preprocessor for every worker of this process (or decorate one)."""
    if function is None:
        return preprocessors.register(name)
    preprocessors.register(name, function)
    return None


# --- what the worker runs with: code registrations and configuration, merged ---


@dataclass(frozen=True)
class SecretSpec:
    """A secret given by configuration: read from an environment variable or a file at
    each use (``source`` ``env``/``file``), or a literal ``value`` (TOML only)."""

    name: str
    source: Literal["env", "file", "value"]
    reference: str = field(repr=False)
    """The variable, the path, or the value itself."""

    def describe(self) -> str:
        """``openai (env OPENAI_API_KEY)``; never a literal value."""
        shown = "value" if self.source == "value" else f"{self.source} {self.reference}"
        return f"{self.name} ({shown})"


@dataclass(frozen=True)
class PreprocessorSpec:
    """A built-in preprocessor registered by configuration under ``name``."""

    name: str
    builtin: str
    options: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """``sign (aws_sigv4 service=s3)``."""
        shown = " ".join(f"{key}={value}" for key, value in self.options)
        return f"{self.name} ({self.builtin}{' ' + shown if shown else ''})"


def _env_secret(variable: str) -> Callable[[str], str]:
    def read(name: str) -> str:
        value = os.environ.get(variable)
        if value is None:
            # set at start (checked there), removed since: fail the request, not the worker
            raise ConfigurationError(
                f"secret {name!r}: environment variable {variable} is no longer set"
            )
        return value

    return read


def _file_secret(path: str) -> Callable[[str], str]:
    cache: dict[str, tuple[tuple[int, int], str]] = {}

    def read(name: str) -> str:
        # Read again only when the file changed (a mounted secret being rotated), so the
        # hot path costs one stat. One trailing newline is dropped: `echo > file` adds it.
        file = Path(path)
        try:
            status = file.stat()
            stamp = (status.st_mtime_ns, status.st_size)
            cached = cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"secret {name!r}: cannot read {path}: {exc}") from exc
        text = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
        cache[path] = (stamp, text)
        return text

    return read


def build_secrets(
    specs: Sequence[SecretSpec], registry: SecretRegistry | None = None
) -> Mapping[str, SecretValue]:
    """The secrets a worker resolves: those registered in code, then the configured ones.

    Every configured source is read once here, so a missing variable or file stops the
    worker at start instead of failing requests one by one. A name given in both places is
    refused: which one would win is not obvious to whoever reads either.
    """
    merged = dict((registry if registry is not None else secrets).snapshot())
    problems: list[str] = []
    for spec in specs:
        if spec.name in merged:
            problems.append(f"secret {spec.name!r} is registered in code and in the configuration")
            continue
        value: SecretValue
        if spec.source == "value":
            value = spec.reference
        elif spec.source == "env":
            if os.environ.get(spec.reference) is None:
                problems.append(
                    f"secret {spec.name!r}: environment variable {spec.reference} is not set"
                )
                continue
            value = _env_secret(spec.reference)
        else:
            value = _file_secret(spec.reference)
            try:
                value(spec.name)
            except ConfigurationError as exc:
                problems.append(str(exc))
                continue
        merged[spec.name] = value
    if problems:
        raise ConfigurationError("\n".join(problems))
    return MappingProxyType(merged)


def build_preprocessors(
    specs: Sequence[PreprocessorSpec], registry: PreprocessorRegistry | None = None
) -> Mapping[str, Preprocessor]:
    """The preprocessors a worker runs: those registered in code, then configured built-ins."""
    merged = dict((registry if registry is not None else preprocessors).snapshot())
    problems: list[str] = []
    for spec in specs:
        if spec.name in merged:
            problems.append(
                f"preprocessor {spec.name!r} is registered in code and in the configuration"
            )
            continue
        try:
            merged[spec.name] = _builtin(spec)
        except ConfigurationError as exc:
            problems.append(f"preprocessor {spec.name!r}: {exc}")
    if problems:
        raise ConfigurationError("\n".join(problems))
    return MappingProxyType(merged)


BUILTIN_PREPROCESSORS: Final = ("aws_sigv4",)


def _builtin(spec: PreprocessorSpec) -> Preprocessor:
    if spec.builtin == "aws_sigv4":
        # only workers that sign load it
        from patient_sidekiq.http.aws_sigv4 import AwsSigV4Signer

        options = dict(spec.options)
        unsigned = options.pop("unsigned_payload", "false").lower() in ("1", "true", "yes")
        service = options.pop("service", "")
        region = options.pop("region", None)
        if options:
            raise ConfigurationError(f"unknown aws_sigv4 options {', '.join(sorted(options))}")
        if not service:
            raise ConfigurationError("aws_sigv4 needs a service (like service=execute-api)")
        return AwsSigV4Signer(service=service, region=region, unsigned_payload=unsigned)
    raise ConfigurationError(
        f"unknown built-in {spec.builtin!r} (built-ins: {', '.join(BUILTIN_PREPROCESSORS)})"
    )
