"""Custom payload encryption: the gem's ``config.encryption`` / ``config.decryption`` blocks.

Role: the process-wide hook pair an application registers (:func:`register_encryption`,
:func:`register_decryption`) and :class:`CustomEncryptor`, which wraps a payload in the gem's
envelope ``{"__encrypted__": true, "value": strict_base64(encrypt(json))}``. A hook replaces
``encryption_key`` in its direction only.

Touches no Redis keys.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from patient_sidekiq.errors import (
    ConfigurationError,
    MalformedMessageError,
    MessageAuthenticationError,
    PlaintextFormatError,
)
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.wire.encryption import ENVELOPE_FLAG, Decrypted, MessageEncryptor

__all__ = [
    "CustomEncryptor",
    "EncryptionHooks",
    "encryption_hooks",
    "register_decryption",
    "register_encryption",
]

_F = TypeVar("_F", bound=Callable[..., Any])


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
        try:
            plain = self._decrypt(cipher)
        except Exception as exc:
            # The ciphertext comes from Redis: a tampered or foreign payload makes the app's
            # hook raise whatever its cipher raises. File it under the envelope error (a Ruby
            # name), never the hook's Python class (``cryptography.exceptions.InvalidTag``).
            raise MessageAuthenticationError(
                f"the decryption hook refused the payload: {type(exc).__name__}: {exc}"
            ) from exc
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


encryption_hooks: Final = EncryptionHooks()
"""The process's hooks: what the module-level functions set, what workers and clients use."""


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
