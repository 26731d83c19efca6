"""Every exception patient-sidekiq raises, in one tree.

::

    PatientSidekiqError
    ├── ConfigurationError            a setting is missing or has a value we cannot use
    ├── UnknownCallbackError          a callback neither registered in Python nor a Ruby class name
    ├── WireFormatError (ValueError)  data that Ruby could not have written, or we cannot read
    │   ├── InvalidJsonError          text is not JSON (or JSON that Ruby's parser refuses)
    │   ├── NotJsonNativeError        a value JSON cannot carry unchanged (NaN, a set, a date …)
    │   ├── InvalidJobError           text that is not a Sidekiq job (Ruby's error name kept)
    │   ├── InvalidRequestError       a request that the gem's Request class would refuse
    │   └── InvalidResultError        a response or error payload the gem could not load
    ├── EncryptionError               ActiveSupport-compatible envelopes (see ``encryption``)
    │   ├── EncryptionNotConfiguredError   an envelope arrived but no key is configured
    │   ├── MalformedMessageError          not base64, wrong shape, or truncated
    │   ├── MessageAuthenticationError     no configured key verifies it (wrong key or tampered)
    │   └── PlaintextFormatError           verified, but neither a Marshal nor a JSON string
    ├── PayloadStoreError             external payload storage (``{"$ref": …}``)
    │   ├── UnknownPayloadStoreError       a reference names a store we do not have
    │   └── PayloadNotFoundError           the store has no payload under that key
    ├── RedisUnavailableError         Redis could not be reached, or the connection broke
    ├── JobArgumentError              a job's args do not fit its class (Ruby's ArgumentError)
    ├── MaxCapacityError              max_connections requests already in flight (gem's name)
    ├── NotRunningError               a RequestWorker job reached a processor not yet serving
    ├── RedisCommandError             Redis answered a command with an error reply
    ├── SecretNotFoundError           a request names a secret nobody registered
    ├── PreprocessorNotFoundError     a request names a preprocessor nobody registered
    ├── ResponseTooLargeError         a response body over max_response_size
    ├── TlsUnexpectedEofError         a TLS server hung up without close_notify, before answering
    ├── InlineNotPossibleError        testing.inline() asked to nest trio.run
    └── PatientHttpError              results delivered to ``on_error``: RequestError, HttpError
                                      and the redirect errors live in ``wire.failures``

Callers that only want to know "did patient-sidekiq refuse this" catch
``PatientSidekiqError``; the worker files every one of them into Sidekiq's retry or dead
set rather than letting it escape.
"""

from __future__ import annotations

from typing import ClassVar


class PatientSidekiqError(Exception):
    """Root of every exception raised by patient-sidekiq.

    ``ruby_class_name``, when set, is the class a Ruby process raises for the same failure;
    a failed job records it as ``error_class`` so both languages file it alike.
    """

    ruby_class_name: ClassVar[str | None] = None


class ConfigurationError(PatientSidekiqError):
    """Raised at startup when a setting is missing or unusable."""


class UnknownCallbackError(PatientSidekiqError, ValueError):
    """Raised when a callback name cannot be run: not registered in Python (with
    ``@patient_sidekiq.callback``) and, where Ruby could run it instead, not a Ruby class name.

    Ruby's callback validation raises ``ArgumentError`` for a callback it cannot use.
    """

    ruby_class_name = "ArgumentError"


class WireFormatError(PatientSidekiqError, ValueError):
    """Raised when data does not follow the gem's or Sidekiq's wire format."""


class InvalidJsonError(WireFormatError):
    """Raised when text is not JSON that Ruby's ``JSON.parse`` would accept."""

    ruby_class_name = "JSON::ParserError"


class NotJsonNativeError(WireFormatError):
    """Raised when a value cannot be written as JSON without changing it.

    Ruby's ``JSON.generate`` only carries nil, booleans, strings, integers, finite floats,
    arrays and string-keyed objects; anything else (a ``datetime``, ``NaN``, a set, bytes)
    would reach the Ruby side altered or not at all.
    """

    ruby_class_name = "JSON::GeneratorError"


class InvalidRequestError(WireFormatError):
    """Raised when a request would be refused by the gem's ``PatientHttp::Request``."""

    ruby_class_name = "ArgumentError"  # PatientHttp::Request.new raises it


class InvalidResultError(WireFormatError):
    """Raised when a response or error payload cannot be loaded."""

    ruby_class_name = "ArgumentError"


class EncryptionError(PatientSidekiqError):
    """Base of every error about encrypted payload envelopes."""


class EncryptionNotConfiguredError(EncryptionError):
    """Raised when an encrypted envelope arrives but no encryption key is configured."""

    ruby_class_name = "ArgumentError"  # as the gem's encryption configuration raises


class MalformedMessageError(EncryptionError):
    """Raised when an envelope is not base64, not three ``--`` parts, or truncated."""

    ruby_class_name = "ArgumentError"  # ActiveSupport may not be loaded where Ruby reads it


class MessageAuthenticationError(EncryptionError):
    """Raised when no configured key (with either digest) verifies the message.

    AES-GCM cannot tell a wrong key from tampered bytes: both fail the same tag check.
    """

    ruby_class_name = "ArgumentError"  # ActiveSupport may not be loaded where Ruby reads it


class PlaintextFormatError(EncryptionError):
    """Raised when a verified plaintext is neither a Marshal string nor a JSON string."""

    ruby_class_name = "ArgumentError"  # ActiveSupport may not be loaded where Ruby reads it


class PayloadStoreError(PatientSidekiqError):
    """Base of every error about external payload storage."""


class UnknownPayloadStoreError(PayloadStoreError):
    """Raised when a ``$ref`` names a store that is not configured here."""

    ruby_class_name = "PatientHttp::ExternalStorage::PayloadStoreNotFoundError"


class PayloadNotFoundError(PayloadStoreError):
    """Raised when a ``$ref`` points at a payload that is no longer stored."""

    ruby_class_name = "PatientHttp::ExternalStorage::PayloadNotFoundError"


class SecretNotFoundError(PatientSidekiqError):
    """A request names a secret this worker has not registered (the request fails)."""

    ruby_class_name = "PatientHttp::SecretManager::SecretNotFoundError"


class PreprocessorNotFoundError(PatientSidekiqError):
    """A request names a preprocessor this worker has not registered (the request fails)."""

    ruby_class_name = "PatientHttp::RequestPreparer::PreprocessorNotFoundError"


class InvalidJobError(WireFormatError):
    """Raised when text is not a Sidekiq job: not JSON, not an object, or no valid class/args.

    ``ruby_error_class`` is what a Ruby Sidekiq process raises for the same text; the
    processor files the job under that name (never a Python class name on the wire).
    """

    def __init__(self, message: str, ruby_error_class: str = "JSON::ParserError") -> None:
        super().__init__(message)
        self.ruby_error_class = ruby_error_class


class RedisUnavailableError(PatientSidekiqError):
    """Raised when Redis cannot be reached or a connection breaks mid-command."""


class JobArgumentError(PatientSidekiqError, ValueError):
    """Raised when a job's ``args`` do not fit its class (count or types), as Ruby's
    ``ArgumentError`` is when ``perform`` gets the wrong arguments."""

    ruby_class_name = "ArgumentError"


class MaxCapacityError(PatientSidekiqError):
    """Raised for a RequestWorker job while ``max_connections`` requests are in flight;
    Sidekiq's retry runs it again later."""

    ruby_class_name = "PatientHttp::MaxCapacityError"


class NotRunningError(PatientSidekiqError):
    """Raised for a RequestWorker job that reaches a processor which is not running."""

    ruby_class_name = "PatientHttp::NotRunningError"


class RedisCommandError(PatientSidekiqError):
    """Raised when Redis answers one command with an error reply (``WRONGTYPE``, ``NOSCRIPT`` …).

    The connection stays usable; other commands of the same pipeline are unaffected.
    """


class PatientHttpError(PatientSidekiqError):
    """Base of the HTTP failures handed to ``on_error`` callbacks.

    The concrete classes live in :mod:`patient_sidekiq.wire.failures` and mirror the gem's
    ``PatientHttp::Error`` subclasses.
    """


class ResponseTooLargeError(PatientSidekiqError):
    """A response body exceeded ``max_response_size`` (the gem's ResponseTooLargeError)."""

    def __init__(self, limit: int) -> None:
        # The gem meets the limit while streaming (its HTTP/1 client consumes the length
        # header), so its message never states the body's size, only the limit.
        super().__init__(f"Response body size exceeded maximum allowed size ({limit} bytes)")
        self.limit = limit


class TlsUnexpectedEofError(PatientSidekiqError):
    """A TLS server closed the connection without close_notify before any response byte.

    Ruby's OpenSSL (3.x, as the gem runs it) refuses such an EOF while reading the status
    line, where a plain TCP close gives the gem's EOFError "Could not read line!".
    """

    ruby_class_name = "OpenSSL::SSL::SSLError"

    def __init__(self) -> None:
        super().__init__("SSL_read: unexpected eof while reading")


class InlineNotPossibleError(PatientSidekiqError, RuntimeError):
    """Raised when a synchronous client runs a request inline inside a running trio loop
    (``trio.run`` cannot nest; use ``AsyncClient`` there)."""
