"""The patient_http gem's wire format: requests, responses, failures, headers, payloads,
encryption, payload stores and packing of job arguments.

The gem's data, re-exported here for code that reads or writes it directly (names load at
first use).

"wire spec §N" in this package is section N of ``docs/patient-http-wire.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patient_sidekiq import _lazy_exports

if TYPE_CHECKING:
    from patient_sidekiq.wire.callback_args import CallbackArgs as CallbackArgs
    from patient_sidekiq.wire.callback_args import validate_callback_args as validate_callback_args
    from patient_sidekiq.wire.encryption import Digest as Digest
    from patient_sidekiq.wire.encryption import Encryptor as Encryptor
    from patient_sidekiq.wire.encryption import MessageEncryptor as MessageEncryptor
    from patient_sidekiq.wire.encryption import PlaintextForm as PlaintextForm
    from patient_sidekiq.wire.failures import load_failure as load_failure
    from patient_sidekiq.wire.headers import Headers as Headers
    from patient_sidekiq.wire.headers import SecretRef as SecretRef
    from patient_sidekiq.wire.jobs import CALLBACK_WORKER as CALLBACK_WORKER
    from patient_sidekiq.wire.jobs import REQUEST_WORKER as REQUEST_WORKER
    from patient_sidekiq.wire.packing import PayloadSettings as PayloadSettings
    from patient_sidekiq.wire.packing import Unpacked as Unpacked
    from patient_sidekiq.wire.packing import pack as pack
    from patient_sidekiq.wire.packing import unpack as unpack
    from patient_sidekiq.wire.payload import Payload as Payload
    from patient_sidekiq.wire.payload_store import FilePayloadStore as FilePayloadStore
    from patient_sidekiq.wire.payload_store import PayloadReference as PayloadReference
    from patient_sidekiq.wire.payload_store import PayloadStore as PayloadStore
    from patient_sidekiq.wire.payload_store import PayloadStoreSpec as PayloadStoreSpec
    from patient_sidekiq.wire.payload_store import RedisPayloadStore as RedisPayloadStore
    from patient_sidekiq.wire.request import Request as Request
    from patient_sidekiq.wire.response import Response as Response
    from patient_sidekiq.wire.s3_store import S3PayloadStore as S3PayloadStore
    from patient_sidekiq.wire.sql_store import SqlPayloadStore as SqlPayloadStore

# name -> module, imported at first use: `import patient_sidekiq` (or the CLI) loads
# only what is asked for.
_EXPORTS: dict[str, str] = {
    "Request": "patient_sidekiq.wire.request",
    "Response": "patient_sidekiq.wire.response",
    "Headers": "patient_sidekiq.wire.headers",
    "SecretRef": "patient_sidekiq.wire.headers",
    "Payload": "patient_sidekiq.wire.payload",
    "CallbackArgs": "patient_sidekiq.wire.callback_args",
    "validate_callback_args": "patient_sidekiq.wire.callback_args",
    "load_failure": "patient_sidekiq.wire.failures",
    "MessageEncryptor": "patient_sidekiq.wire.encryption",
    "Digest": "patient_sidekiq.wire.encryption",
    "PlaintextForm": "patient_sidekiq.wire.encryption",
    "Encryptor": "patient_sidekiq.wire.encryption",
    "PayloadSettings": "patient_sidekiq.wire.packing",
    "Unpacked": "patient_sidekiq.wire.packing",
    "pack": "patient_sidekiq.wire.packing",
    "unpack": "patient_sidekiq.wire.packing",
    "PayloadStore": "patient_sidekiq.wire.payload_store",
    "PayloadReference": "patient_sidekiq.wire.payload_store",
    "PayloadStoreSpec": "patient_sidekiq.wire.payload_store",
    "RedisPayloadStore": "patient_sidekiq.wire.payload_store",
    "FilePayloadStore": "patient_sidekiq.wire.payload_store",
    "S3PayloadStore": "patient_sidekiq.wire.s3_store",
    "SqlPayloadStore": "patient_sidekiq.wire.sql_store",
    "REQUEST_WORKER": "patient_sidekiq.wire.jobs",
    "CALLBACK_WORKER": "patient_sidekiq.wire.jobs",
}

__all__ = [
    "CALLBACK_WORKER",
    "REQUEST_WORKER",
    "CallbackArgs",
    "Digest",
    "Encryptor",
    "FilePayloadStore",
    "Headers",
    "MessageEncryptor",
    "Payload",
    "PayloadReference",
    "PayloadSettings",
    "PayloadStore",
    "PayloadStoreSpec",
    "PlaintextForm",
    "RedisPayloadStore",
    "Request",
    "Response",
    "S3PayloadStore",
    "SecretRef",
    "SqlPayloadStore",
    "Unpacked",
    "load_failure",
    "pack",
    "unpack",
    "validate_callback_args",
]

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, globals())
