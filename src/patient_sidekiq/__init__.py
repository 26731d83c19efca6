"""patient-sidekiq: a Python worker for patient_http-sidekiq jobs, speaking Sidekiq's protocol.

Implementation modules are named after their role (ARCHITECTURE.md lists them); this
module only re-exports the public API, and ``tests/test_public_api.py`` pins the names.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .callback_args import CallbackArgs as CallbackArgs
from .callback_args import validate_callback_args as validate_callback_args
from .callback_worker import CallbackWorker as CallbackWorker
from .callback_worker import CallbackWorkerSettings as CallbackWorkerSettings
from .callbacks import CallbackRegistry as CallbackRegistry
from .callbacks import callback as callback
from .client import SidekiqClient as SidekiqClient
from .client_api import configure as configure
from .client_api import delete as delete
from .client_api import execute as execute
from .client_api import get as get
from .client_api import patch as patch
from .client_api import post as post
from .client_api import put as put
from .config import Config as Config
from .config import PayloadStoreSpec as PayloadStoreSpec
from .config import load_config as load_config
from .encryption import Digest as Digest
from .encryption import MessageEncryptor as MessageEncryptor
from .encryption import PlaintextForm as PlaintextForm
from .enqueue import AsyncClient as AsyncClient
from .enqueue import Client as Client
from .enqueue import FileStore as FileStore
from .enqueue import RedisStore as RedisStore
from .enqueue import S3Store as S3Store
from .enqueue import SqlStore as SqlStore
from .errors import ConfigurationError as ConfigurationError
from .errors import EncryptionError as EncryptionError
from .errors import EncryptionNotConfiguredError as EncryptionNotConfiguredError
from .errors import InvalidJsonError as InvalidJsonError
from .errors import InvalidRequestError as InvalidRequestError
from .errors import InvalidResultError as InvalidResultError
from .errors import JobArgumentError as JobArgumentError
from .errors import MalformedMessageError as MalformedMessageError
from .errors import MaxCapacityError as MaxCapacityError
from .errors import MessageAuthenticationError as MessageAuthenticationError
from .errors import NotJsonNativeError as NotJsonNativeError
from .errors import NotRunningError as NotRunningError
from .errors import PatientHttpError as PatientHttpError
from .errors import PatientSidekiqError as PatientSidekiqError
from .errors import PayloadNotFoundError as PayloadNotFoundError
from .errors import PayloadStoreError as PayloadStoreError
from .errors import PlaintextFormatError as PlaintextFormatError
from .errors import PreprocessorNotFoundError as PreprocessorNotFoundError
from .errors import RedisCommandError as RedisCommandError
from .errors import RedisUnavailableError as RedisUnavailableError
from .errors import SecretNotFoundError as SecretNotFoundError
from .errors import UnknownCallbackError as UnknownCallbackError
from .errors import UnknownPayloadStoreError as UnknownPayloadStoreError
from .errors import WireFormatError as WireFormatError
from .failures import ClientError as ClientError
from .failures import HttpError as HttpError
from .failures import RecursiveRedirectError as RecursiveRedirectError
from .failures import RedirectError as RedirectError
from .failures import RequestError as RequestError
from .failures import ServerError as ServerError
from .failures import TooManyRedirectsError as TooManyRedirectsError
from .failures import load_failure as load_failure
from .headers import Headers as Headers
from .headers import SecretRef as SecretRef
from .hooks import Hooks as Hooks
from .hooks import after_completion as after_completion
from .hooks import after_error as after_error
from .hooks import default_hooks as default_hooks
from .hooks import on_retries_exhausted as on_retries_exhausted
from .http_client import HttpSettings as HttpSettings
from .http_client import OutgoingRequest as OutgoingRequest
from .job import Job as Job
from .job import TimestampDialect as TimestampDialect
from .launcher import Launcher as Launcher
from .launcher import WorkerSettings as WorkerSettings
from .packing import PayloadSettings as PayloadSettings
from .packing import Unpacked as Unpacked
from .packing import pack as pack
from .packing import unpack as unpack
from .payload import Payload as Payload
from .payload_store import FilePayloadStore as FilePayloadStore
from .payload_store import PayloadReference as PayloadReference
from .payload_store import PayloadStore as PayloadStore
from .payload_store import RedisPayloadStore as RedisPayloadStore
from .processor import Dispatcher as Dispatcher
from .redis_bridge import RedisBridge as RedisBridge
from .redis_target import RedisTarget as RedisTarget
from .registries import register_decryption as register_decryption
from .registries import register_encryption as register_encryption
from .registries import register_preprocessor as register_preprocessor
from .registries import register_secret as register_secret
from .request import Request as Request
from .request_worker import CallbackRouting as CallbackRouting
from .request_worker import RequestWorker as RequestWorker
from .request_worker import RequestWorkerSettings as RequestWorkerSettings
from .response import Response as Response
from .runner import Runner as Runner
from .templates import RequestTemplate as RequestTemplate

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
