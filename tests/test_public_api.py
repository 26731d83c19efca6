import patient_sidekiq
from patient_sidekiq import errors

PINNED = {
    "S3Store",
    "SqlStore",
    "PreprocessorNotFoundError",
    "SecretNotFoundError",
    "register_decryption",
    "register_encryption",
    "register_preprocessor",
    "register_secret",
    "CallbackWorker",
    "CallbackWorkerSettings",
    "CallbackRegistry",
    "callback",
    "Config",
    "PayloadStoreSpec",
    "load_config",
    "AsyncClient",
    "Client",
    "FileStore",
    "RedisStore",
    "configure",
    "delete",
    "execute",
    "get",
    "patch",
    "post",
    "put",
    "UnknownCallbackError",
    "after_completion",
    "after_error",
    "default_hooks",
    "on_retries_exhausted",
    "RedisTarget",
    "Runner",
    "RequestTemplate",
    "CallbackRouting",
    "RequestWorker",
    "RequestWorkerSettings",
    "Hooks",
    "HttpSettings",
    "OutgoingRequest",
    "Launcher",
    "WorkerSettings",
    "Dispatcher",
    "JobArgumentError",
    "MaxCapacityError",
    "NotRunningError",
    "Job",
    "SidekiqClient",
    "TimestampDialect",
    "CallbackArgs",
    "ClientError",
    "ConfigurationError",
    "Digest",
    "EncryptionError",
    "EncryptionNotConfiguredError",
    "FilePayloadStore",
    "Headers",
    "HttpError",
    "InvalidJsonError",
    "InvalidRequestError",
    "InvalidResultError",
    "MalformedMessageError",
    "MessageAuthenticationError",
    "MessageEncryptor",
    "NotJsonNativeError",
    "PatientHttpError",
    "PatientSidekiqError",
    "Payload",
    "PayloadNotFoundError",
    "PayloadReference",
    "PayloadSettings",
    "PayloadStore",
    "PayloadStoreError",
    "PlaintextForm",
    "PlaintextFormatError",
    "RecursiveRedirectError",
    "RedirectError",
    "RedisBridge",
    "RedisCommandError",
    "RedisPayloadStore",
    "RedisUnavailableError",
    "Request",
    "RequestError",
    "Response",
    "SecretRef",
    "ServerError",
    "TooManyRedirectsError",
    "UnknownPayloadStoreError",
    "Unpacked",
    "WireFormatError",
    "__version__",
    "load_failure",
    "pack",
    "unpack",
    "validate_callback_args",
}


def test_exported_names_are_pinned() -> None:
    assert set(patient_sidekiq.__all__) == PINNED
    for name in PINNED:
        assert hasattr(patient_sidekiq, name), name


def test_every_exception_descends_from_the_package_root() -> None:
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.PatientSidekiqError), value
    for name in PINNED:
        value = getattr(patient_sidekiq, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.PatientSidekiqError), name


def test_the_python_api_reads_like_the_gems() -> None:
    # What a Python app writes: module-level verbs, a callback decorator, hooks.
    for verb in ("get", "post", "put", "patch", "delete", "execute", "configure"):
        assert callable(getattr(patient_sidekiq, verb)), verb
    assert patient_sidekiq.after_completion.__self__ is patient_sidekiq.default_hooks
