"""Enqueueing HTTP requests from Python, as ``PatientHttp::Sidekiq.execute`` does in Ruby.

Role: the synchronous client API. :class:`Client` uses redis-py (any Python app);
:class:`~patient_sidekiq.client.async_client.AsyncClient` is its trio twin. Both build their
jobs with ONE :class:`~patient_sidekiq.client.builder.JobBuilder`, so a job is the exact text
the gem writes; the callback and ``callback_args`` are checked before anything is written.
This module adds configuration (URL, keys, stores, Sidekiq version), the push itself and the
test modes.

Redis keys touched: ``queues`` (SADD), ``queue:<queue>`` (LPUSH) and, for a large payload
in the Redis store, ``patient_http:payloads:<uuid>`` (SET, in the same MULTI as the push).

While :mod:`patient_sidekiq.testing` has a test mode on, nothing is written: requests run
inline (or are collected), see there. The module-level functions (``configure``, ``get`` …)
live in :mod:`patient_sidekiq.client.module_api`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import redis

from patient_sidekiq import keys, testing
from patient_sidekiq.client.builder import (
    CallbackRef,
    Enqueued,
    EnqueueOptions,
    FileStore,
    JobBuilder,
    PayloadStoreChoice,
    RedisStore,
    RequestOptions,
    S3Store,
    SqlStore,
    new_request_id,
    split_options,
)
from patient_sidekiq.errors import ConfigurationError, RedisCommandError, RedisUnavailableError
from patient_sidekiq.redis_io.redis_target import RedisTarget, as_target
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.registry.callbacks import registry as default_registry
from patient_sidekiq.registry.encryption_hooks import CustomEncryptor, encryption_hooks
from patient_sidekiq.sidekiq.job import TimestampDialect, new_jid
from patient_sidekiq.wire.encryption import Encryptor, MessageEncryptor
from patient_sidekiq.wire.jobs import DEFAULT_REQUEST_QUEUE
from patient_sidekiq.wire.packing import DEFAULT_STORE_THRESHOLD
from patient_sidekiq.wire.payload_store import (
    FilePayloadStore,
    redis_set_command,
    ttl_millis,
)
from patient_sidekiq.wire.request import Request
from patient_sidekiq.wire.sql_store import DEFAULT_TABLE as DEFAULT_SQL_TABLE

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from patient_sidekiq.config.model import Config

# JobBuilder and its values are re-exported: enqueue is where users look for them.
__all__ = [
    "CallbackRef",
    "Client",
    "EnqueueOptions",
    "Enqueued",
    "FileStore",
    "JobBuilder",
    "RedisStore",
    "RequestOptions",
    "S3Store",
    "SqlStore",
    "new_request_id",
]

DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"
REDIS_URL_ENV: Final = "REDIS_URL"
ENCRYPTION_KEY_ENV: Final = "PATIENT_HTTP_ENCRYPTION_KEY"

SidekiqVersion = Literal["6", "7", "8"]


def dialect(version: SidekiqVersion) -> TimestampDialect:
    if version in ("6", "7"):
        return TimestampDialect.SECONDS
    if version == "8":
        return TimestampDialect.MILLIS
    raise ConfigurationError(f"sidekiq_version must be '6', '7' or '8', not {version!r}")


def _encryptor(key: str | Sequence[str] | Encryptor | None) -> Encryptor | None:
    if key is None:
        env = os.environ.get(ENCRYPTION_KEY_ENV, "")
        keys_from_env = [part.strip() for part in env.split(",") if part.strip()]
        keyed = MessageEncryptor(keys_from_env) if keys_from_env else None
        # Registered hooks apply to every enqueue of the process, as the gem's
        # config.encryption block applies to every PatientHttp::Sidekiq.execute.
        if encryption_hooks.configured:
            return CustomEncryptor(encryption_hooks, keyed)
        return keyed
    if isinstance(key, str | Sequence):
        return MessageEncryptor(key)
    return key


class _SyncWriter(Protocol):
    def put_sync(self, key: str, json_text: str) -> None: ...


def _sync_store(choice: PayloadStoreChoice | None) -> _SyncWriter | None:
    """The writer of a store a client writes itself (Redis stores ride the push's MULTI)."""
    if isinstance(choice, FileStore):
        return FilePayloadStore(choice.directory)
    if isinstance(choice, S3Store):
        from patient_sidekiq.wire.s3_store import S3PayloadStore

        return S3PayloadStore(
            choice.bucket,
            key_prefix=choice.key_prefix,
            endpoint_url=choice.endpoint_url,
            region=choice.region,
        )
    if isinstance(choice, SqlStore):
        from patient_sidekiq.wire.sql_store import SqlPayloadStore

        return SqlPayloadStore(choice.url, table=choice.table)
    return None


class Client:
    """Enqueues requests from any Python program, synchronously (one Redis round trip each).

    ``redis_url`` defaults to ``$REDIS_URL``, else ``redis://localhost:6379/0`` (a
    :class:`~patient_sidekiq.redis_io.redis_target.RedisTarget` works too, for Sentinel); ``redis``
    injects a ready redis-py client instead. ``encryption_key`` (one key or a list, current
    first, or a configured ``MessageEncryptor``) defaults to ``$PATIENT_HTTP_ENCRYPTION_KEY``
    (comma-separated), with the registered encryption hooks, if any, taking their direction.
    ``payload_store`` (:class:`RedisStore`, :class:`FileStore`, :class:`S3Store` or
    :class:`SqlStore`) receives payloads whose JSON is larger than
    ``payload_store_threshold`` bytes. ``sidekiq_version``
    chooses how timestamps are written ("8": integer milliseconds).

    Thread-safe: redis-py's connection pool serves concurrent callers.
    """

    _own_store_redis: redis.Redis | None
    """The payload store's own Redis (its ``url``), opened at its first use."""

    def __init__(
        self,
        redis_url: str | RedisTarget | None = None,
        *,
        queue: str = DEFAULT_REQUEST_QUEUE,
        encryption_key: str | Sequence[str] | Encryptor | None = None,
        payload_store: PayloadStoreChoice | None = None,
        payload_store_threshold: int = DEFAULT_STORE_THRESHOLD,
        registry: CallbackRegistry = default_registry,
        sidekiq_version: SidekiqVersion = "7",
        redis: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
        new_request_id: Callable[[], str] = new_request_id,
        new_jid: Callable[[], str] = new_jid,
    ) -> None:
        if payload_store is not None and not isinstance(
            payload_store, RedisStore | FileStore | S3Store | SqlStore
        ):
            raise ConfigurationError(
                "payload_store must be a RedisStore, FileStore, S3Store or SqlStore, "
                f"not {payload_store!r}"
            )
        self.builder = JobBuilder(
            queue=queue,
            encryptor=_encryptor(encryption_key),
            store=payload_store.name if payload_store is not None else None,
            store_threshold=payload_store_threshold,
            registry=registry,
            dialect=dialect(sidekiq_version),
            clock=clock,
            new_request_id=new_request_id,
            new_jid=new_jid,
        )
        self._store = payload_store
        self._other_store = _sync_store(payload_store)
        self._owns_redis = redis is None
        if redis is None:
            url = redis_url or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
            redis = as_target(url).client()
        self._redis = redis
        self._own_store_redis = None

    @classmethod
    def from_config(
        cls, config: Config, *, queue: str | None = None, registry: CallbackRegistry | None = None
    ) -> Client:
        """A client enqueueing as a worker built from ``config`` reads: same Redis, key list
        and default payload store; ``queue`` defaults to the first queue the worker polls."""
        spec = next((s for s in config.payload_stores if s.name == config.default_store_name), None)
        store: PayloadStoreChoice | None = None
        if spec is not None and spec.adapter == "redis":
            prefix = keys.PAYLOAD_PREFIX if spec.key_prefix is None else spec.key_prefix
            store = RedisStore(name=spec.name, ttl=spec.ttl, prefix=prefix, url=spec.url)
        elif spec is not None and spec.adapter == "file" and spec.directory is not None:
            store = FileStore(spec.directory, name=spec.name)
        elif spec is not None and spec.adapter == "s3" and spec.bucket is not None:
            store = S3Store(
                spec.bucket,
                name=spec.name,
                key_prefix=spec.key_prefix,
                endpoint_url=spec.endpoint_url,
                region=spec.region,
            )
        elif spec is not None and spec.adapter == "active_record" and spec.url is not None:
            store = SqlStore(spec.url, name=spec.name, table=spec.table or DEFAULT_SQL_TABLE)
        return cls(
            config.redis_target(),
            queue=queue or config.queues[0][0],
            encryption_key=config.encryptor(encryption_hooks),
            payload_store=store,
            payload_store_threshold=config.payload_store_threshold,
            registry=registry if registry is not None else default_registry,
            sidekiq_version=config.sidekiq_version,
        )

    def _store_redis(self, url: str) -> redis.Redis:
        """The connection to the payload store's own Redis, opened at its first use."""
        if self._own_store_redis is None:
            self._own_store_redis = redis.Redis.from_url(url)
        return self._own_store_redis

    def close(self) -> None:
        """Close the Redis connections this client opened (an injected client is left open)."""
        if self._owns_redis:
            self._redis.close()
        if self._own_store_redis is not None:
            self._own_store_redis.close()
            self._own_store_redis = None
        close_store = getattr(self._other_store, "close", None)
        if close_store is not None:
            close_store()  # an SQL store's connection

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def execute(
        self,
        request: Request,
        *,
        callback: CallbackRef,
        callback_args: Mapping[str, Any] | None = None,
        raise_error_responses: bool | None = False,
    ) -> str:
        """Enqueue ``request``; return its request id (``PatientHttp::Sidekiq.execute``).

        ``callback`` is a registered Python callback class or a callback name (registered,
        or a Ruby class name the Ruby app runs). ``raise_error_responses`` defaults to
        False as in the gem; ``None`` writes ``null``, which the gem's processor and ours read
        as false (a worker's ``raise_error_responses`` setting applies to inline runs only).
        """
        enqueued = self.builder.build(
            request,
            callback=callback,
            callback_args=callback_args,
            raise_error_responses=raise_error_responses,
        )
        mode = testing.current_mode()
        if mode is not None:
            mode.handle(enqueued, self.builder.registry)
            return enqueued.request_id
        self._write(enqueued)
        return enqueued.request_id

    def _write(self, enqueued: Enqueued) -> None:
        commands = enqueued.push_commands
        sealed = enqueued.sealed
        if sealed.reference is not None and sealed.stored_text is not None:
            if isinstance(self._store, RedisStore):
                set_command = redis_set_command(
                    sealed.reference.key,
                    sealed.stored_text,
                    prefix=self._store.prefix,
                    ttl_ms=ttl_millis(self._store.ttl),
                )
                if self._store.url:
                    # A store on a Redis of its own: written first, then the job is pushed.
                    own = self._store_redis(self._store.url)
                    try:
                        own.execute_command(*set_command)  # type: ignore[no-untyped-call]
                    except (redis.ConnectionError, redis.TimeoutError) as exc:
                        raise RedisUnavailableError(f"could not store the payload: {exc}") from exc
                else:
                    # The payload must exist before a worker can pop the job: one MULTI.
                    commands = [set_command, *commands]
            elif self._other_store is not None:
                self._other_store.put_sync(sealed.reference.key, sealed.stored_text)
        try:
            with self._redis.pipeline(transaction=len(commands) > 2) as pipe:
                for command in commands:
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailableError(f"could not enqueue the request: {exc}") from exc
        except redis.ResponseError as exc:
            raise RedisCommandError(str(exc)) from exc

    def request(
        self,
        method: str,
        url: str,
        *,
        callback: CallbackRef,
        **options: Unpack[EnqueueOptions],
    ) -> str:
        """Build a request (as ``Request.build``) and enqueue it; return its request id.

        ``raise_error_responses`` defaults to None (the worker's setting), as the gem's
        module-level ``PatientHttp.get``/``post``/… do.
        """
        request, options = split_options(method, url, options)
        return self.execute(
            request,
            callback=callback,
            callback_args=options.get("callback_args"),
            raise_error_responses=options.get("raise_error_responses"),
        )

    def get(self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
        """Enqueue a GET; keyword arguments as :meth:`request`."""
        return self.request("get", url, callback=callback, **kwargs)

    def post(self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
        """Enqueue a POST; keyword arguments as :meth:`request`."""
        return self.request("post", url, callback=callback, **kwargs)

    def put(self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
        """Enqueue a PUT; keyword arguments as :meth:`request`."""
        return self.request("put", url, callback=callback, **kwargs)

    def patch(self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
        """Enqueue a PATCH; keyword arguments as :meth:`request`."""
        return self.request("patch", url, callback=callback, **kwargs)

    def delete(self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
        """Enqueue a DELETE; keyword arguments as :meth:`request`."""
        return self.request("delete", url, callback=callback, **kwargs)
