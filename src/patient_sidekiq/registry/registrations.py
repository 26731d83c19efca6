"""What an application registers for the worker, as a Ruby app configures the gem in code.

Role: three registries, each filled at import time (a module loaded with ``-r``) and read
when the worker starts:

* **secrets**, the gem's ``register_secret``: a request carries only ``{"$secret": "name"}``
  in a header or a query param, and the worker resolves the name when it sends the request.
  A value is a string, or a callable called with the name at EACH resolution (sync or
  async), as the gem calls a block, so a rotated token is picked up without a restart.
* **preprocessors**, the gem's ``register_preprocessor``: callables given the
  :class:`~patient_sidekiq.http.http_client.OutgoingRequest` after secrets are resolved and the
  send-time headers set, on every hop of a redirect chain (sync or async).
* **encryption hooks**, the gem's ``config.encryption { |json| … }`` and
  ``config.decryption { |data| … }``: bytes in, bytes out; the envelope around them is the
  gem's (see :class:`CustomEncryptor`). A hook replaces ``encryption_key`` for its direction.

Configuration can add secrets and built-in preprocessors without code (see
:mod:`patient_sidekiq.config.options`); :func:`build_secrets` and
:func:`build_preprocessors` merge both sources for the worker.

Touches no Redis keys.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, overload

from patient_sidekiq.errors import ConfigurationError, MalformedMessageError, PlaintextFormatError
from patient_sidekiq.http.settings import Preprocessor, SecretValue
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.wire.encryption import ENVELOPE_FLAG, Decrypted, MessageEncryptor

__all__ = [
    "CustomEncryptor",
    "EncryptionHooks",
    "PreprocessorRegistry",
    "PreprocessorSpec",
    "SecretRegistry",
    "SecretSpec",
    "build_preprocessors",
    "build_secrets",
    "encryption_hooks",
    "preprocessors",
    "register_decryption",
    "register_encryption",
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


EncryptHook = Callable[[bytes], bytes | str]
"""``config.encryption``: the payload's JSON text (UTF-8) in, the ciphertext out."""

DecryptHook = Callable[[bytes], bytes | str]
"""``config.decryption``: the ciphertext in, the JSON text out."""


@dataclass
class EncryptionHooks:
    """The custom encryption callables; each replaces ``encryption_key`` in its direction."""

    encrypt: EncryptHook | None = None
    decrypt: DecryptHook | None = None

    @property
    def configured(self) -> bool:
        """Whether either hook is set."""
        return self.encrypt is not None or self.decrypt is not None

    def clear(self) -> None:
        """Forget both hooks (tests)."""
        self.encrypt = None
        self.decrypt = None


class CustomEncryptor:
    """Payload encryption through the registered hooks, in the gem's envelope.

    The gem writes ``{"__encrypted__": true, "value": strict_base64(encryption(json))}`` and
    reads ``JSON.parse(decryption(base64_decode(value)))``. A direction without its hook
    falls back to ``fallback`` (an ``encryption_key`` encryptor) or, for encryption, to
    writing the payload as it is: the gem's behaviour with only a decryption block.
    """

    def __init__(
        self,
        hooks: EncryptionHooks,
        fallback: MessageEncryptor | None = None,
    ) -> None:
        self._encrypt = hooks.encrypt
        self._decrypt = hooks.decrypt
        self._fallback = fallback

    @property
    def encrypts(self) -> bool:
        """Whether payloads written through this encryptor are encrypted at all."""
        return self._encrypt is not None or self._fallback is not None

    def encrypt(self, data: Mapping[str, Any], *, iv: bytes | None = None) -> dict[str, Any]:
        """Return the envelope for ``data`` (or ``data`` itself with no way to encrypt)."""
        if self._encrypt is None:
            if self._fallback is not None:
                return self._fallback.encrypt(data, iv=iv)
            return dict(data)
        text = rubyjson.dumps(dict(data))
        cipher = self._encrypt(text.encode("utf-8"))
        if isinstance(cipher, str):
            cipher = cipher.encode("utf-8")  # a Ruby String: its bytes are what is encoded
        if not isinstance(cipher, bytes | bytearray):
            raise ConfigurationError(
                f"the encryption hook returned {type(cipher).__name__}, not bytes or str"
            )
        return {ENVELOPE_FLAG: True, "value": base64.b64encode(bytes(cipher)).decode("ascii")}

    def decrypt_text(self, envelope: Mapping[str, Any]) -> Decrypted:
        """Open an envelope; the JSON text inside and how it was opened."""
        if self._decrypt is None:
            if self._fallback is not None:
                return self._fallback.decrypt_text(envelope)
            raise MalformedMessageError("payload is encrypted but no decryption hook is set")
        value = envelope.get("value")
        if not isinstance(value, str):
            raise MalformedMessageError("encrypted payload has no string 'value'")
        try:
            # Ruby's unpack1("m") is lenient: it skips what is not base64 and stops at '='
            cipher = base64.b64decode(value.encode("ascii", "ignore"), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise MalformedMessageError(f"encrypted payload 'value' is not base64: {exc}") from exc
        plain = self._decrypt(cipher)
        if isinstance(plain, bytes | bytearray):
            try:
                plain = bytes(plain).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PlaintextFormatError(f"decrypted payload is not UTF-8: {exc}") from exc
        if not isinstance(plain, str):
            raise PlaintextFormatError(
                f"the decryption hook returned {type(plain).__name__}, not bytes or str"
            )
        return Decrypted(plain, key_index=0, digest=None, form=None)


# --- the process-wide registries the module-level functions fill ---

secrets: Final = SecretRegistry()
preprocessors: Final = PreprocessorRegistry()
encryption_hooks: Final = EncryptionHooks()


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


def register_encryption(function: _F) -> _F:
    """Set the encryption hook (usable as a decorator): JSON bytes in, ciphertext out."""
    if not callable(function):
        raise ConfigurationError("the encryption hook must be callable")
    encryption_hooks.encrypt = function
    return function


def register_decryption(function: _F) -> _F:
    """Set the decryption hook (usable as a decorator): ciphertext in, JSON text out."""
    if not callable(function):
        raise ConfigurationError("the decryption hook must be callable")
    encryption_hooks.decrypt = function
    return function


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
