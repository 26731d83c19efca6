"""Job arguments in and out: ``pack`` and ``unpack`` for ``args[0]`` of both job classes.

Writing follows the gem's order (wire spec §1, §5, §6): payload → encrypt (when a key is
configured) → store externally (when a store is configured and the JSON is larger than
the threshold). Reading undoes it: fetch when a ``{"$ref": …}`` → decrypt when an
envelope → payload. Both take one frozen :class:`PayloadSettings`.

Unlike the gem, :func:`unpack` refuses an encrypted envelope when no key is configured
(the gem passes the envelope on, and the job then fails somewhere less obvious), and it
reports where a payload was stored so the caller deletes it only once the job is done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from patient_sidekiq.errors import (
    ConfigurationError,
    EncryptionNotConfiguredError,
    PayloadNotFoundError,
    PlaintextFormatError,
    UnknownPayloadStoreError,
    WireFormatError,
)
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.wire.encryption import Decrypted, Encryptor, is_envelope
from patient_sidekiq.wire.payload_store import PayloadReference, PayloadStore, is_reference, new_key

__all__ = [
    "DEFAULT_STORE_THRESHOLD",
    "PayloadSettings",
    "Sealed",
    "Unpacked",
    "delete_stored",
    "pack",
    "seal",
    "unpack",
]

DEFAULT_STORE_THRESHOLD: Final = 65_536
"""Bytes of JSON above which a payload goes to external storage (the gem's default)."""


@dataclass(frozen=True, slots=True)
class PayloadSettings:
    """How job payloads are encrypted and stored; one value shared by every job.

    ``stores`` are every store a reference may name (all are readable); new large
    payloads go to ``default_store`` (the gem uses the most recently registered one).
    Without a ``default_store`` nothing is stored externally.
    """

    encryptor: Encryptor | None = None
    stores: Mapping[str, PayloadStore] = field(default_factory=dict)
    default_store: str | None = None
    store_threshold: int = DEFAULT_STORE_THRESHOLD

    def __post_init__(self) -> None:
        object.__setattr__(self, "stores", MappingProxyType(dict(self.stores)))
        if self.default_store is not None and self.default_store not in self.stores:
            raise ConfigurationError(
                f"default payload store {self.default_store!r} is not one of the configured "
                f"stores ({', '.join(self.stores) or 'none'})"
            )
        if self.store_threshold < 0:
            raise ConfigurationError("payload_store_threshold must be 0 or more bytes")


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A job argument after :func:`unpack`.

    ``reference`` is set when the payload came from external storage (delete it with
    :func:`delete_stored` once the job no longer needs it); ``decrypted`` tells which key,
    digest and plaintext form opened an encrypted payload.
    """

    data: dict[str, Any]
    reference: PayloadReference | None = None
    decrypted: Decrypted | None = None


@dataclass(frozen=True, slots=True)
class Sealed:
    """A payload made ready for a job, before anything is written anywhere.

    ``argument`` goes into the job; when ``reference`` is set, ``stored_text`` must be
    written to that store under that key BEFORE the job is pushed (``argument`` is then the
    reference itself).
    """

    argument: dict[str, Any]
    reference: PayloadReference | None = None
    stored_text: str | None = None


def seal(
    data: Mapping[str, Any],
    *,
    encryptor: Encryptor | None,
    store: str | None,
    threshold: int = DEFAULT_STORE_THRESHOLD,
) -> Sealed:
    """Encrypt ``data`` (with an encryptor) and decide whether it goes to ``store``.

    The pure half of :func:`pack`, shared with writers that are not async (the enqueue
    client writes the stored payload with its own synchronous Redis connection).
    """
    wire = encryptor.encrypt(data) if encryptor is not None else dict(data)
    if store is None:
        return Sealed(wire)
    text = rubyjson.dumps(wire)
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size <= threshold:
        return Sealed(wire)
    reference = PayloadReference(store, new_key())
    return Sealed(reference.to_wire(), reference, text)


async def pack(data: Mapping[str, Any], settings: PayloadSettings) -> dict[str, Any]:
    """Return the job argument for ``data``: encrypted and/or stored as configured."""
    sealed = seal(
        data,
        encryptor=settings.encryptor,
        store=settings.default_store,
        threshold=settings.store_threshold,
    )
    if sealed.reference is not None and sealed.stored_text is not None:
        await settings.stores[sealed.reference.store].put(sealed.reference.key, sealed.stored_text)
    return sealed.argument


async def unpack(argument: object, settings: PayloadSettings) -> Unpacked:
    """Return the payload behind a job argument (fetching and decrypting as needed).

    Raises :class:`UnknownPayloadStoreError` or :class:`PayloadNotFoundError` for a
    reference that cannot be followed, :class:`EncryptionNotConfiguredError` or another
    :class:`~patient_sidekiq.errors.EncryptionError` for an envelope that cannot be
    opened, and :class:`WireFormatError` when the result is not a JSON object.
    """
    reference: PayloadReference | None = None
    if is_reference(argument):
        assert isinstance(argument, Mapping)
        reference = PayloadReference.from_wire(argument)
        store = settings.stores.get(reference.store)
        if store is None:
            raise UnknownPayloadStoreError(f"Payload store '{reference.store}' not registered")
        text = await store.get(reference.key)
        if text is None:
            raise PayloadNotFoundError(
                f"Stored payload not found: {reference.store}/{reference.key}"
            )
        argument = rubyjson.loads(text)
    if not isinstance(argument, dict):
        raise WireFormatError(f"job payload must be a JSON object, got {type(argument).__name__}")
    if not is_envelope(argument):
        return Unpacked(argument, reference)
    if settings.encryptor is None:
        raise EncryptionNotConfiguredError(
            "payload is encrypted but no encryption key is configured"
        )
    decrypted = settings.encryptor.decrypt_text(argument)
    try:
        data = rubyjson.loads(decrypted.text)
    except WireFormatError as exc:
        raise PlaintextFormatError(f"decrypted payload is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PlaintextFormatError("decrypted payload is not a JSON object")
    return Unpacked(data, reference, decrypted)


async def delete_stored(reference: PayloadReference | None, settings: PayloadSettings) -> None:
    """Delete an externally stored payload; a no-op without a reference or a known store."""
    if reference is None:
        return
    store = settings.stores.get(reference.store)
    if store is not None:
        await store.delete(reference.key)
