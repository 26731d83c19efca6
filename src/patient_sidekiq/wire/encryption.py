"""Payload envelopes byte-compatible with patient_http's ``ActiveSupport::MessageEncryptor``.

With ``config.encryption_key`` set, the gem replaces a payload by
``{"__encrypted__": true, "value": strict_b64(message)}`` where the message is
``b64(ciphertext)--b64(iv)--b64(tag)``: AES-256-GCM under a key derived by PBKDF2 from
the configured password (wire spec §5). The plaintext is the payload's JSON text,
serialized as a Marshal string (default) or, for Rails >= 7.1 apps using the ``:json``
message serializer, as a JSON string literal.

Which digest and serializer a Ruby peer uses depends on its Rails defaults, which the
envelope does not record, so decryption tries every combination (keys in order, SHA1
first) and reports the one that matched. Encryption writes one configured combination;
the default (Marshal + SHA1) is what every ActiveSupport from 6.1 to 8 reads.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from patient_sidekiq.errors import (
    ConfigurationError,
    InvalidJsonError,
    MalformedMessageError,
    MessageAuthenticationError,
    PlaintextFormatError,
)
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.ruby.ruby_marshal import marshal_dump_string, marshal_load_string

__all__ = [
    "ENVELOPE_FLAG",
    "Decrypted",
    "Digest",
    "Encryptor",
    "MessageEncryptor",
    "PlaintextForm",
    "derive_key",
    "is_envelope",
    "marshal_dump_string",
    "marshal_load_string",
]

ENVELOPE_FLAG: Final = "__encrypted__"
"""Key whose (Ruby-)truthy value marks a payload as an encrypted envelope."""

KDF_SALT: Final = b"patient_http_payload_encryption"
KDF_ITERATIONS: Final = 65_536
KEY_BYTES: Final = 32
IV_BYTES: Final = 12
TAG_BYTES: Final = 16

_MARSHAL_SIGNATURE = b"\x04\x08"
_ASCII_WHITESPACE = re.compile(rb"[ \t\n\r\f\v]+")
# ActiveSupport::JSON.encode escapes these on top of what JSON.generate does (HTML
# entities and JavaScript line separators), and its :json serializer uses that encoder.
_ACTIVESUPPORT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class Digest(enum.Enum):
    """PBKDF2 digest: SHA1 is ActiveSupport's default, SHA256 Rails' ``load_defaults 7.0``+."""

    SHA1 = "sha1"
    SHA256 = "sha256"


class PlaintextForm(enum.Enum):
    """How the JSON text is serialized inside the ciphertext."""

    MARSHAL = "marshal"
    """``Marshal.dump`` of the string: the default, readable by every ActiveSupport."""
    JSON = "json"
    """A JSON string literal (ActiveSupport >= 7.1 ``:json`` serializer); 6.1 cannot read it."""


@dataclass(frozen=True, slots=True)
class Decrypted:
    """A verified plaintext and the configuration that opened it."""

    text: str
    """The payload's JSON text."""
    key_index: int
    """Position of the matching password among the non-empty keys (0 = the current key)."""
    digest: Digest | None
    """``None`` when a registered decryption hook opened it (see ``registry.registrations``)."""
    form: PlaintextForm | None
    """``None`` when a registered decryption hook opened it."""


class Encryptor(Protocol):
    """What packing needs: :class:`MessageEncryptor` (keys) or a hook-based encryptor."""

    def encrypt(self, data: Mapping[str, Any], *, iv: bytes | None = None) -> dict[str, Any]:
        """Return the envelope written in place of ``data``."""

    def decrypt_text(self, envelope: Mapping[str, Any]) -> Decrypted:
        """Return the JSON text inside ``envelope``."""


def is_envelope(data: object) -> bool:
    """Return whether ``data`` is an encrypted envelope, by Ruby's rule.

    The gem tests ``data["__encrypted__"]`` for Ruby truthiness, so any value except
    ``nil`` and ``false`` (even ``0`` or ``""``) marks an envelope.
    """
    # The exact-type test first: parsed JSON is a dict, which skips the ABC check's cost.
    if type(data) is not dict and not isinstance(data, Mapping):
        return False
    flag = data.get(ENVELOPE_FLAG)
    return flag is not None and flag is not False


def derive_key(password: str, digest: Digest) -> bytes:
    """Derive the AES-256 key for ``password`` as ``ActiveSupport::KeyGenerator`` does."""
    return hashlib.pbkdf2_hmac(
        digest.value, password.encode("utf-8"), KDF_SALT, KDF_ITERATIONS, KEY_BYTES
    )


def _strict_b64decode(text: str, what: str) -> bytes:
    # Ruby's strict_decode64 refuses padding errors and non-zero trailing bits, which
    # b64decode(validate=True) alone lets through; re-encoding catches the latter.
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessageError(f"{what} is not valid base64") from exc
    if base64.b64encode(data).decode("ascii") != text:
        raise MalformedMessageError(f"{what} is not valid base64 (not canonical)")
    return data


def _lenient_b64decode(text: str) -> bytes:
    # Ruby reads the outer value with unpack1("m"), which tolerates line breaks and
    # missing padding (Base64.encode64 output, or values re-wrapped by other tools).
    try:
        raw = _ASCII_WHITESPACE.sub(b"", text.encode("ascii"))
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise MalformedMessageError("envelope value is not valid base64") from exc


def _json_string_literal(text: str) -> str:
    return rubyjson.dumps(text).translate(_ACTIVESUPPORT_ESCAPES)


class MessageEncryptor:
    """Encrypts and decrypts patient_http payload envelopes.

    ``keys`` is one password or a list, current first (``config.encryption_key``); empty
    strings are dropped as Ruby drops them. ``digest`` and ``form`` choose what
    :meth:`encrypt` writes; ``accepted_digests`` are tried, in order, when decrypting.
    Keys are derived on first use and cached: PBKDF2 takes tens of milliseconds.
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        *,
        digest: Digest = Digest.SHA1,
        form: PlaintextForm = PlaintextForm.MARSHAL,
        accepted_digests: Sequence[Digest] = (Digest.SHA1, Digest.SHA256),
    ) -> None:
        candidates = [keys] if isinstance(keys, str) else list(keys)
        if not all(isinstance(key, str) for key in candidates):
            raise ConfigurationError("encryption keys must be strings")
        self._passwords: tuple[str, ...] = tuple(key for key in candidates if key)
        if not self._passwords:
            raise ConfigurationError("no encryption key given (empty keys are ignored)")
        self._accepted: tuple[Digest, ...] = tuple(dict.fromkeys(accepted_digests))
        if not self._accepted:
            raise ConfigurationError("accepted_digests is empty: nothing could be decrypted")
        self.digest = digest
        self.form = form
        self._ciphers: dict[tuple[str, Digest], AESGCM] = {}

    def _cipher(self, password: str, digest: Digest) -> AESGCM:
        cipher = self._ciphers.get((password, digest))
        if cipher is None:
            cipher = self._ciphers[(password, digest)] = AESGCM(derive_key(password, digest))
        return cipher

    def encrypt_text(self, text: str, *, iv: bytes | None = None) -> dict[str, Any]:
        """Return the envelope holding the JSON text ``text``, under the first key.

        ``iv`` fixes the 12-byte IV (only for reproducing test vectors: reusing an IV
        under one key breaks GCM); by default a random one is drawn.
        """
        if iv is None:
            iv = os.urandom(IV_BYTES)
        elif len(iv) != IV_BYTES:
            raise ValueError(f"IV is {len(iv)} bytes, expected {IV_BYTES}")
        if self.form is PlaintextForm.MARSHAL:
            plaintext = marshal_dump_string(text)
        else:
            plaintext = _json_string_literal(text).encode("utf-8")
        sealed = self._cipher(self._passwords[0], self.digest).encrypt(iv, plaintext, None)
        parts = (sealed[:-TAG_BYTES], iv, sealed[-TAG_BYTES:])
        message = "--".join(base64.b64encode(part).decode("ascii") for part in parts)
        value = base64.b64encode(message.encode("ascii")).decode("ascii")
        return {ENVELOPE_FLAG: True, "value": value}

    def encrypt(self, data: Mapping[str, Any], *, iv: bytes | None = None) -> dict[str, Any]:
        """Return the envelope for ``data``, written as Ruby's ``JSON.generate`` writes it."""
        return self.encrypt_text(rubyjson.dumps(data), iv=iv)

    def decrypt_text(self, envelope: Mapping[str, Any]) -> Decrypted:
        """Verify and open ``envelope``, returning its JSON text and what matched.

        Raises :class:`MalformedMessageError` when the envelope cannot be a message,
        :class:`MessageAuthenticationError` when no key and digest verify it, and
        :class:`PlaintextFormatError` when the verified plaintext is neither form.
        """
        if not is_envelope(envelope):
            raise MalformedMessageError(f"not an encrypted envelope (no truthy {ENVELOPE_FLAG!r})")
        value = envelope.get("value")
        if not isinstance(value, str):
            raise MalformedMessageError(f"envelope value is {type(value).__name__}, not a string")
        ciphertext, iv, tag = _split_message(_lenient_b64decode(value))
        for key_index, password in enumerate(self._passwords):
            for digest in self._accepted:
                try:
                    plaintext = self._cipher(password, digest).decrypt(iv, ciphertext + tag, None)
                except InvalidTag:
                    continue
                text, form = _deserialize(plaintext)
                return Decrypted(text=text, key_index=key_index, digest=digest, form=form)
        raise MessageAuthenticationError(
            f"no configured key verifies this message (tried {len(self._passwords)} keys x "
            f"{len(self._accepted)} digests): wrong key or tampered data"
        )

    def decrypt(self, envelope: Mapping[str, Any]) -> dict[str, Any]:
        """Open ``envelope`` and parse its JSON text, which must be an object."""
        text = self.decrypt_text(envelope).text
        try:
            data = rubyjson.loads(text)
        except InvalidJsonError as exc:
            raise PlaintextFormatError(f"decrypted text is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise PlaintextFormatError(
                f"decrypted JSON is {type(data).__name__}, expected an object"
            )
        return data


def _split_message(message: bytes) -> tuple[bytes, bytes, bytes]:
    try:
        text = message.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedMessageError("decoded envelope value is not an ASCII message") from exc
    parts = text.split("--")
    if len(parts) != 3:
        raise MalformedMessageError(f"message has {len(parts)} '--' parts, expected 3 (truncated?)")
    ciphertext = _strict_b64decode(parts[0], "ciphertext")
    iv = _strict_b64decode(parts[1], "IV")
    tag = _strict_b64decode(parts[2], "auth tag")
    if len(iv) != IV_BYTES:
        raise MalformedMessageError(f"IV is {len(iv)} bytes, expected {IV_BYTES}")
    if len(tag) != TAG_BYTES:
        raise MalformedMessageError(
            f"auth tag is {len(tag)} bytes, expected {TAG_BYTES} (truncated?)"
        )
    return ciphertext, iv, tag


def _deserialize(plaintext: bytes) -> tuple[str, PlaintextForm]:
    # The serializer is recognised from the plaintext itself, as ActiveSupport's
    # fallback serializers do: Marshal data always opens with its version bytes.
    if plaintext.startswith(_MARSHAL_SIGNATURE):
        return marshal_load_string(plaintext), PlaintextForm.MARSHAL
    try:
        # Decoded here because json.loads would also guess UTF-16 and UTF-32 from bytes.
        text = rubyjson.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, InvalidJsonError) as exc:
        raise PlaintextFormatError("plaintext is neither a Marshal string nor JSON") from exc
    if not isinstance(text, str):
        raise PlaintextFormatError(
            f"JSON plaintext is {type(text).__name__}, expected a string literal"
        )
    try:
        # A lone surrogate escape (\ud800) parses, but is no text Ruby could have sent.
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PlaintextFormatError(f"JSON plaintext is not valid Unicode: {exc.reason}") from exc
    return text, PlaintextForm.JSON
