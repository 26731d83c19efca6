"""patient-sidekiq: a Python worker for patient_http-sidekiq jobs, speaking Sidekiq's protocol.

Implementation modules are named after their role (ARCHITECTURE.md lists them); this
module only re-exports the public API, and ``tests/test_public_api.py`` pins the names.
"""

from __future__ import annotations

from patient_sidekiq._version import __version__ as __version__
from patient_sidekiq.client.enqueue import AsyncClient as AsyncClient
from patient_sidekiq.client.enqueue import Client as Client
from patient_sidekiq.client.enqueue import FileStore as FileStore
from patient_sidekiq.client.enqueue import RedisStore as RedisStore
from patient_sidekiq.client.enqueue import S3Store as S3Store
from patient_sidekiq.client.enqueue import SqlStore as SqlStore
from patient_sidekiq.client.module_api import configure as configure
from patient_sidekiq.client.module_api import delete as delete
from patient_sidekiq.client.module_api import execute as execute
from patient_sidekiq.client.module_api import get as get
from patient_sidekiq.client.module_api import patch as patch
from patient_sidekiq.client.module_api import post as post
from patient_sidekiq.client.module_api import put as put
from patient_sidekiq.client.templates import RequestTemplate as RequestTemplate
from patient_sidekiq.config.model import Config as Config
from patient_sidekiq.config.model import PayloadStoreSpec as PayloadStoreSpec
from patient_sidekiq.config.model import load_config as load_config
from patient_sidekiq.errors import ConfigurationError as ConfigurationError
from patient_sidekiq.errors import EncryptionError as EncryptionError
from patient_sidekiq.errors import EncryptionNotConfiguredError as EncryptionNotConfiguredError
from patient_sidekiq.errors import InvalidJsonError as InvalidJsonError
from patient_sidekiq.errors import InvalidRequestError as InvalidRequestError
from patient_sidekiq.errors import InvalidResultError as InvalidResultError
from patient_sidekiq.errors import JobArgumentError as JobArgumentError
from patient_sidekiq.errors import MalformedMessageError as MalformedMessageError
from patient_sidekiq.errors import MaxCapacityError as MaxCapacityError
from patient_sidekiq.errors import MessageAuthenticationError as MessageAuthenticationError
from patient_sidekiq.errors import NotJsonNativeError as NotJsonNativeError
from patient_sidekiq.errors import NotRunningError as NotRunningError
from patient_sidekiq.errors import PatientHttpError as PatientHttpError
from patient_sidekiq.errors import PatientSidekiqError as PatientSidekiqError
from patient_sidekiq.errors import PayloadNotFoundError as PayloadNotFoundError
from patient_sidekiq.errors import PayloadStoreError as PayloadStoreError
from patient_sidekiq.errors import PlaintextFormatError as PlaintextFormatError
from patient_sidekiq.errors import PreprocessorNotFoundError as PreprocessorNotFoundError
from patient_sidekiq.errors import RedisCommandError as RedisCommandError
from patient_sidekiq.errors import RedisUnavailableError as RedisUnavailableError
from patient_sidekiq.errors import SecretNotFoundError as SecretNotFoundError
from patient_sidekiq.errors import UnknownCallbackError as UnknownCallbackError
from patient_sidekiq.errors import UnknownPayloadStoreError as UnknownPayloadStoreError
from patient_sidekiq.errors import WireFormatError as WireFormatError
from patient_sidekiq.http.settings import HttpSettings as HttpSettings
from patient_sidekiq.http.settings import OutgoingRequest as OutgoingRequest
from patient_sidekiq.redis_io.redis_bridge import RedisBridge as RedisBridge
from patient_sidekiq.redis_io.redis_target import RedisTarget as RedisTarget
from patient_sidekiq.registry.callbacks import CallbackRegistry as CallbackRegistry
from patient_sidekiq.registry.callbacks import callback as callback
from patient_sidekiq.registry.hooks import Hooks as Hooks
from patient_sidekiq.registry.hooks import after_completion as after_completion
from patient_sidekiq.registry.hooks import after_error as after_error
from patient_sidekiq.registry.hooks import default_hooks as default_hooks
from patient_sidekiq.registry.hooks import on_retries_exhausted as on_retries_exhausted
from patient_sidekiq.registry.registrations import register_decryption as register_decryption
from patient_sidekiq.registry.registrations import register_encryption as register_encryption
from patient_sidekiq.registry.registrations import register_preprocessor as register_preprocessor
from patient_sidekiq.registry.registrations import register_secret as register_secret
from patient_sidekiq.sidekiq.client import SidekiqClient as SidekiqClient
from patient_sidekiq.sidekiq.job import Job as Job
from patient_sidekiq.sidekiq.job import TimestampDialect as TimestampDialect
from patient_sidekiq.sidekiq.launcher import Launcher as Launcher
from patient_sidekiq.sidekiq.launcher import WorkerSettings as WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher as Dispatcher
from patient_sidekiq.wire.callback_args import CallbackArgs as CallbackArgs
from patient_sidekiq.wire.callback_args import validate_callback_args as validate_callback_args
from patient_sidekiq.wire.encryption import Digest as Digest
from patient_sidekiq.wire.encryption import MessageEncryptor as MessageEncryptor
from patient_sidekiq.wire.encryption import PlaintextForm as PlaintextForm
from patient_sidekiq.wire.failures import ClientError as ClientError
from patient_sidekiq.wire.failures import HttpError as HttpError
from patient_sidekiq.wire.failures import RecursiveRedirectError as RecursiveRedirectError
from patient_sidekiq.wire.failures import RedirectError as RedirectError
from patient_sidekiq.wire.failures import RequestError as RequestError
from patient_sidekiq.wire.failures import ServerError as ServerError
from patient_sidekiq.wire.failures import TooManyRedirectsError as TooManyRedirectsError
from patient_sidekiq.wire.failures import load_failure as load_failure
from patient_sidekiq.wire.headers import Headers as Headers
from patient_sidekiq.wire.headers import SecretRef as SecretRef
from patient_sidekiq.wire.packing import PayloadSettings as PayloadSettings
from patient_sidekiq.wire.packing import Unpacked as Unpacked
from patient_sidekiq.wire.packing import pack as pack
from patient_sidekiq.wire.packing import unpack as unpack
from patient_sidekiq.wire.payload import Payload as Payload
from patient_sidekiq.wire.payload_store import FilePayloadStore as FilePayloadStore
from patient_sidekiq.wire.payload_store import PayloadReference as PayloadReference
from patient_sidekiq.wire.payload_store import PayloadStore as PayloadStore
from patient_sidekiq.wire.payload_store import RedisPayloadStore as RedisPayloadStore
from patient_sidekiq.wire.request import Request as Request
from patient_sidekiq.wire.response import Response as Response
from patient_sidekiq.worker.callback_worker import CallbackWorker as CallbackWorker
from patient_sidekiq.worker.callback_worker import CallbackWorkerSettings as CallbackWorkerSettings
from patient_sidekiq.worker.request_worker import CallbackRouting as CallbackRouting
from patient_sidekiq.worker.request_worker import RequestWorker as RequestWorker
from patient_sidekiq.worker.request_worker import RequestWorkerSettings as RequestWorkerSettings
from patient_sidekiq.worker.runner import Runner as Runner

__all__ = [
    "AsyncClient",
    "CallbackArgs",
    "CallbackRegistry",
    "CallbackRouting",
    "CallbackWorker",
    "CallbackWorkerSettings",
    "Client",
    "ClientError",
    "Config",
    "ConfigurationError",
    "Digest",
    "Dispatcher",
    "EncryptionError",
    "EncryptionNotConfiguredError",
    "FilePayloadStore",
    "FileStore",
    "Headers",
    "Hooks",
    "HttpError",
    "HttpSettings",
    "InvalidJsonError",
    "InvalidRequestError",
    "InvalidResultError",
    "Job",
    "JobArgumentError",
    "Launcher",
    "MalformedMessageError",
    "MaxCapacityError",
    "MessageAuthenticationError",
    "MessageEncryptor",
    "NotJsonNativeError",
    "NotRunningError",
    "OutgoingRequest",
    "PatientHttpError",
    "PatientSidekiqError",
    "Payload",
    "PayloadNotFoundError",
    "PayloadReference",
    "PayloadSettings",
    "PayloadStore",
    "PayloadStoreError",
    "PayloadStoreSpec",
    "PlaintextForm",
    "PlaintextFormatError",
    "PreprocessorNotFoundError",
    "RecursiveRedirectError",
    "RedirectError",
    "RedisBridge",
    "RedisCommandError",
    "RedisPayloadStore",
    "RedisStore",
    "RedisTarget",
    "RedisUnavailableError",
    "Request",
    "RequestError",
    "RequestTemplate",
    "RequestWorker",
    "RequestWorkerSettings",
    "Response",
    "Runner",
    "S3Store",
    "SecretNotFoundError",
    "SecretRef",
    "ServerError",
    "SidekiqClient",
    "SqlStore",
    "TimestampDialect",
    "TooManyRedirectsError",
    "UnknownCallbackError",
    "UnknownPayloadStoreError",
    "Unpacked",
    "WireFormatError",
    "WorkerSettings",
    "__version__",
    "after_completion",
    "after_error",
    "callback",
    "configure",
    "default_hooks",
    "delete",
    "execute",
    "get",
    "load_config",
    "load_failure",
    "on_retries_exhausted",
    "pack",
    "patch",
    "post",
    "put",
    "register_decryption",
    "register_encryption",
    "register_preprocessor",
    "register_secret",
    "unpack",
    "validate_callback_args",
]
