"""Payloads kept as objects in an S3 bucket: the patient_http gem's ``:s3`` adapter.

This is the Python side of ``PatientHttp::PayloadStore::S3Store`` (patient_http 1.3.0,
``payload_store/s3_store.rb``). A stored payload is one object, ``<key_prefix><key>``
(prefix ``patient_http/payloads/`` unless configured), whose body is exactly the JSON text
the writer produced, in UTF-8, with content type ``application/json`` and no metadata. So a
payload Ruby stored reads back here byte for byte, and Ruby's ``fetch`` parses what we put.
A missing object reads as ``None``; deleting one that is gone is not an error.

This store touches no Redis keys: the job only carries the ``{"$ref": …}`` pointing here.

boto3 is an optional dependency (the ``s3`` extra); its engine, botocore, is imported only
when a store is built. Credentials, region, retries and profiles come from boto3's standard chain
(``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, ``~/.aws/config``, instance roles …);
``endpoint_url`` points the store at an S3-compatible server such as MinIO.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Final

from patient_sidekiq.errors import ConfigurationError, PayloadStoreError
from patient_sidekiq.wire.payload_store import ThreadedPayloadStore, _decode, _encode

DEFAULT_S3_KEY_PREFIX: Final = "patient_http/payloads/"
"""The gem's default ``key_prefix``."""

CONTENT_TYPE: Final = "application/json"
"""What the gem's adapter sets on every object it writes (no charset parameter)."""

_INSTALL_HINT: Final = "pip install 'patient-sidekiq[s3]'"

# The error codes S3 (and S3-compatible servers) answer for "no such object": GetObject says
# NoSuchKey, a HEAD (which has no body to carry a code) shows up as the bare status.
_MISSING_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})

# A TCP connect that has not completed in this long will not: fail the attempt (botocore
# retries it per the configured retry mode) rather than hold a worker thread for botocore's
# default 60 seconds per attempt. Reads keep botocore's default.
_CONNECT_TIMEOUT: Final = 10.0


@dataclass(slots=True)
class _SharedDataLoader:
    """botocore's loader of service descriptions, shared by the sessions of every store."""

    lock: threading.Lock
    loader: Any = None  # botocore.loaders.Loader, once the first client is built


_DATA_LOADER: Final = _SharedDataLoader(threading.Lock())


@dataclass(frozen=True, slots=True)
class _Boto:
    """The few botocore names this module uses (botocore is what boto3 runs on).

    botocore ships no type information, so everything from it is ``Any``; keeping those names
    here, behind :func:`_load_boto`, is the whole boundary between typed code and boto.
    """

    core_session_class: Any  # botocore.session.Session
    config_class: Any  # botocore.config.Config
    client_error: type[Exception]  # botocore.exceptions.ClientError (an S3 error reply)
    core_error: type[Exception]  # botocore.exceptions.BotoCoreError (no reply: network …)


def _load_boto() -> _Boto:
    """Import botocore now, or raise :class:`ConfigurationError` saying how to install it."""
    try:
        # import_module rather than ``import botocore``: the modules come back as ModuleType,
        # whose attributes are Any, so mypy --strict needs no stubs and no overrides.
        core_session = importlib.import_module("botocore.session")
        config = importlib.import_module("botocore.config")
        exceptions = importlib.import_module("botocore.exceptions")
    except ImportError as exc:
        raise ConfigurationError(
            f"the S3 payload store needs boto3, which is not installed: {_INSTALL_HINT}"
        ) from exc
    return _Boto(
        core_session_class=core_session.Session,
        config_class=config.Config,
        client_error=exceptions.ClientError,
        core_error=exceptions.BotoCoreError,
    )


def _error_code(exc: BaseException) -> str:
    """The S3 error code of a ClientError (``NoSuchBucket``, ``AccessDenied``, ``404`` …)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error")
        if isinstance(error, dict) and error.get("Code"):
            return str(error["Code"])
        metadata = response.get("ResponseMetadata")
        if isinstance(metadata, dict) and metadata.get("HTTPStatusCode"):
            return str(metadata["HTTPStatusCode"])
    return "unknown"


class S3PayloadStore(ThreadedPayloadStore):
    """The gem's ``:s3`` adapter: one object per payload, ``<key_prefix><key>`` in ``bucket``.

    ``client`` is a ready boto3 S3 client to use instead of building one (then
    ``endpoint_url`` and ``region`` must not be given). Otherwise one client is built on
    first use and shared by every call: boto3 clients are thread-safe, and one client keeps
    one connection pool.

    boto3 blocks, so the async methods run the ``*_sync`` ones in a worker thread; the
    synchronous enqueue client calls ``put_sync`` directly.
    """

    def __init__(
        self,
        bucket: str,
        *,
        key_prefix: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: object | None = None,
    ) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise ConfigurationError("the S3 payload store needs a bucket name")
        if client is not None and (endpoint_url is not None or region is not None):
            raise ConfigurationError(
                "the S3 payload store takes either a ready client or endpoint_url/region, not both"
            )
        # Fail at startup, not at the first large payload, when boto3 is missing.
        self._boto = _load_boto()
        self._bucket = bucket
        # As the gem: only a missing prefix means the default; "" is a valid (empty) prefix.
        self._key_prefix: str = DEFAULT_S3_KEY_PREFIX if key_prefix is None else key_prefix
        self._endpoint_url = endpoint_url
        self._region = region
        self._client: Any = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()

    @property
    def bucket(self) -> str:
        """The bucket every payload of this store lives in."""
        return self._bucket

    @property
    def key_prefix(self) -> str:
        """What is put before every key to make the object key."""
        return self._key_prefix

    def __repr__(self) -> str:
        return f"S3PayloadStore(bucket={self._bucket!r}, key_prefix={self._key_prefix!r})"

    def object_key(self, key: str) -> str:
        """Return the S3 object key of payload ``key``, refusing keys no writer makes.

        The key comes from a job, which anyone who can push to Redis can write. An empty key
        would address the bare prefix; no writer puts a NUL in a key (the gem's keys are
        uuids), and S3's XML listings cannot carry one. Both are refused before anything is
        sent. Any other text is a valid key, as it is for the gem.
        """
        if not isinstance(key, str) or not key or "\0" in key:
            raise PayloadStoreError(f"invalid payload key {key!r}")
        return f"{self._key_prefix}{key}"

    def _where(self, object_key: str) -> str:
        return f"s3://{self._bucket}/{object_key}"

    def _s3(self) -> Any:
        """The store's S3 client, built on first use (under a lock: threads race here)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _build_client(self) -> Any:
        s3_options: dict[str, str] = {}
        if self._endpoint_url is not None:
            # S3-compatible servers (MinIO, moto, Ceph) are usually reached by address or a
            # single host name with no per-bucket DNS: address buckets in the path there.
            s3_options["addressing_style"] = "path"
        config = self._boto.config_class(connect_timeout=_CONNECT_TIMEOUT, s3=s3_options)
        try:
            with _DATA_LOADER.lock:
                # A session of our own, so the credential chain and settings are read for this
                # store (a shared default session would be module state, unsafe in threads).
                core = self._boto.core_session_class()
                # botocore parses S3's service description (~0.1 s) once per session; it never
                # changes, so every store's session shares the first one's loader and cache.
                if _DATA_LOADER.loader is None:
                    _DATA_LOADER.loader = core.get_component("data_loader")
                else:
                    core.register_component("data_loader", _DATA_LOADER.loader)
                # What boto3.client("s3") builds, straight from botocore: a boto3 Session would
                # add its own resource path to the shared loader once per store.
                return core.create_client(
                    "s3", region_name=self._region, endpoint_url=self._endpoint_url, config=config
                )
        except (self._boto.core_error, ValueError) as exc:  # bad endpoint URL, unknown region
            raise PayloadStoreError(
                f"cannot set up the S3 client for bucket {self._bucket!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _failure(self, action: str, object_key: str, exc: Exception) -> PayloadStoreError:
        """Say which call on which object failed, and S3's error code when there is one."""
        where = self._where(object_key)
        if isinstance(exc, self._boto.client_error):
            return PayloadStoreError(f"S3 {action} {where} failed ({_error_code(exc)}): {exc}")
        return PayloadStoreError(f"S3 {action} {where} failed: {type(exc).__name__}: {exc}")

    # --- synchronous halves (run in a worker thread by the async methods) ---

    def put_sync(self, key: str, json_text: str) -> None:
        """Store ``json_text`` as the object's body, replacing any object already there."""
        object_key = self.object_key(key)
        body = _encode(json_text, self._where(object_key))
        client = self._s3()
        try:
            client.put_object(
                Bucket=self._bucket, Key=object_key, Body=body, ContentType=CONTENT_TYPE
            )
        except (self._boto.client_error, self._boto.core_error) as exc:
            raise self._failure("put", object_key, exc) from exc

    def get_sync(self, key: str) -> str | None:
        """Return the object's body as text, or ``None`` when there is no such object."""
        object_key = self.object_key(key)
        client = self._s3()
        try:
            response = client.get_object(Bucket=self._bucket, Key=object_key)
            stream = response["Body"]
            try:
                data = stream.read()
            finally:
                stream.close()  # hand the connection back to the pool even if read failed
        except self._boto.client_error as exc:
            if _error_code(exc) in _MISSING_CODES:
                return None
            raise self._failure("get", object_key, exc) from exc
        except self._boto.core_error as exc:
            raise self._failure("get", object_key, exc) from exc
        if not isinstance(data, bytes):
            raise PayloadStoreError(f"unexpected S3 body for {self._where(object_key)}: {data!r}")
        return _decode(data, self._where(object_key))

    def delete_sync(self, key: str) -> None:
        """Delete the object; S3 answers success for a missing one, so this is idempotent."""
        object_key = self.object_key(key)
        client = self._s3()
        try:
            client.delete_object(Bucket=self._bucket, Key=object_key)
        except (self._boto.client_error, self._boto.core_error) as exc:
            raise self._failure("delete", object_key, exc) from exc

    def close(self) -> None:
        """Close the connection pool of the client this store built; a later call builds a
        new one. A client given to the constructor belongs to the caller and is left open."""
        if not self._owns_client:
            return
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
