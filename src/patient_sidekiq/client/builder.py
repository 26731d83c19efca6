"""Building RequestWorker jobs exactly as ``PatientHttp::Sidekiq.execute`` writes them.

Role: the job core shared by :class:`~patient_sidekiq.client.enqueue.Client` and
:class:`~patient_sidekiq.client.enqueue.AsyncClient` (and the test modes). :class:`JobBuilder`
checks the callback and ``callback_args``, seals the request (encrypted when a key is
configured, stored when its JSON is larger than the threshold; wire spec §1, §5, §6) and
returns an :class:`Enqueued`: ``RequestWorker`` with args ``[data, callback_name,
raise_error_responses, callback_args, request_id]``, ``retry: true``, the queue, a fresh jid
and ``created_at``/``enqueued_at`` in the Sidekiq version's dialect. Also the payload store
choices of the clients (:class:`RedisStore`, :class:`FileStore`) and their keyword options.

Touches no Redis keys itself: :attr:`Enqueued.push_commands` are the commands a client sends
(``queues`` SADD, ``queue:<queue>`` LPUSH).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict

from patient_sidekiq import keys
from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.redis_io.redis_bridge import Arg
from patient_sidekiq.registry.callbacks import CallbackRegistry, resolve_callback_name
from patient_sidekiq.registry.callbacks import registry as default_registry
from patient_sidekiq.sidekiq.client import push_raw_commands
from patient_sidekiq.sidekiq.job import Job, TimestampDialect, new_jid, stamp
from patient_sidekiq.wire.callback_args import validate_callback_args
from patient_sidekiq.wire.encryption import Encryptor
from patient_sidekiq.wire.jobs import DEFAULT_REQUEST_QUEUE, REQUEST_WORKER
from patient_sidekiq.wire.packing import DEFAULT_STORE_THRESHOLD, Sealed, seal
from patient_sidekiq.wire.payload_store import ttl_millis
from patient_sidekiq.wire.request import HeaderValue, Request

__all__ = [
    "CallbackRef",
    "EnqueueOptions",
    "Enqueued",
    "FileStore",
    "JobBuilder",
    "RedisStore",
    "RequestOptions",
    "new_request_id",
    "split_options",
]

"""The queue of RequestWorker jobs unless told otherwise (never ``default``)."""

CallbackRef = type | str
Command = tuple[Arg, ...]


class RequestOptions(TypedDict, total=False):
    """Keyword arguments of ``get``/``post``/… that build the request (see ``Request.build``)."""

    headers: Mapping[str, HeaderValue] | None
    body: str | bytes | None
    json: Any
    params: Mapping[str, Any] | None
    timeout: float | None
    max_redirects: int | None
    preprocessors: Iterable[str] | None


class EnqueueOptions(RequestOptions, total=False):
    """:class:`RequestOptions` plus what goes with the request into the job."""

    callback_args: Mapping[str, Any] | None
    raise_error_responses: bool | None


def new_request_id() -> str:
    """Return a fresh request id: a random uuid, like Ruby's ``SecureRandom.uuid``."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class RedisStore:
    """Large payloads go to Redis, as the gem's ``:redis`` payload store writes them.

    ``name`` must be the name the workers know the store by (it is written into the
    reference); ``ttl`` (seconds) expires payloads nobody picked up.
    """

    name: str = "redis"
    prefix: str = keys.PAYLOAD_PREFIX
    ttl: float | None = None
    url: str | None = field(default=None, repr=False)
    """A Redis of the store's own (the gem's ``redis:`` option); None: the jobs' Redis."""

    def __post_init__(self) -> None:
        ttl_millis(self.ttl)  # refuse an unusable TTL when configuring, not at first enqueue


@dataclass(frozen=True)
class FileStore:
    """Large payloads go to ``<directory>/<uuid>.json`` (the gem's ``:file`` store)."""

    directory: str | os.PathLike[str]
    name: str = "file"


@dataclass(frozen=True)
class S3Store:
    """Large payloads go to S3 objects ``<key_prefix><uuid>`` (the gem's ``:s3`` store).

    Credentials come from boto3's usual chain; ``endpoint_url`` for S3-compatible servers.
    Needs ``pip install 'patient-sidekiq[s3]'``.
    """

    bucket: str
    name: str = "s3"
    key_prefix: str | None = None
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class SqlStore:
    """Large payloads go to rows of the gem's ``:active_record`` table, in SQLite
    (``sqlite:///path.db``) or PostgreSQL (``postgresql://…``, needs
    ``pip install 'patient-sidekiq[postgresql]'``)."""

    url: str = field(repr=False)  # may hold a password
    name: str = "active_record"
    table: str = "patient_http_payloads"


PayloadStoreChoice = RedisStore | FileStore | S3Store | SqlStore
"""What a client may be given as its ``payload_store``."""


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One request made ready to enqueue: its job and what the job refers to.

    ``job`` is the RequestWorker job exactly as it will be pushed; ``sealed`` says whether
    a stored payload must be written first. ``request`` and the checked callback values
    are kept for the test modes, which run the request instead of pushing it.
    """

    request_id: str
    callback_name: str
    request: Request
    callback_args: dict[str, Any] | None
    raise_error_responses: bool | None
    job: Job
    sealed: Sealed

    @property
    def push_commands(self) -> list[Command]:
        """The Sidekiq push: ``SADD queues <q>`` and ``LPUSH queue:<q> <job>``."""
        return push_raw_commands(str(self.job.queue), self.job.raw)


class JobBuilder:
    """Builds RequestWorker jobs; the one core both clients share.

    ``clock``, ``new_request_id`` and ``new_jid`` are injectable so tests can reproduce a
    Ruby-built job byte for byte.
    """

    def __init__(
        self,
        *,
        queue: str = DEFAULT_REQUEST_QUEUE,
        encryptor: Encryptor | None = None,
        store: str | None = None,
        store_threshold: int = DEFAULT_STORE_THRESHOLD,
        registry: CallbackRegistry = default_registry,
        dialect: TimestampDialect = TimestampDialect.SECONDS,
        clock: Callable[[], float] = time.time,
        new_request_id: Callable[[], str] = new_request_id,
        new_jid: Callable[[], str] = new_jid,
    ) -> None:
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError("queue must be a non-empty string")
        if store_threshold < 0:
            raise ConfigurationError("payload_store_threshold must be 0 or more bytes")
        self.queue = queue
        self.encryptor = encryptor
        self.store = store
        self.store_threshold = store_threshold
        self.registry = registry
        self.dialect = dialect
        self._clock = clock
        self._new_request_id = new_request_id
        self._new_jid = new_jid

    def build(
        self,
        request: Request,
        *,
        callback: CallbackRef,
        callback_args: Mapping[str, Any] | None,
        raise_error_responses: bool | None,
    ) -> Enqueued:
        """Check the arguments and return the job (nothing is written).

        Raises :class:`~patient_sidekiq.errors.UnknownCallbackError` for a callback nobody
        could run and :class:`~patient_sidekiq.errors.NotJsonNativeError` for
        ``callback_args`` JSON cannot carry unchanged.
        """
        if not isinstance(request, Request):
            raise TypeError(f"request must be a patient_sidekiq Request, not {request!r}")
        if raise_error_responses is not None and not isinstance(raise_error_responses, bool):
            raise TypeError(
                f"raise_error_responses must be True, False or None, not {raise_error_responses!r}"
            )
        callback_name = resolve_callback_name(callback, self.registry)
        # The gem keeps nil as nil (the job carries null); only a given mapping is checked.
        checked_args = None if callback_args is None else validate_callback_args(callback_args)
        request_id = self._new_request_id()
        sealed = seal(
            request.to_wire(),
            encryptor=self.encryptor,
            store=self.store,
            threshold=self.store_threshold,
        )
        now = stamp(self.dialect, self._clock())
        job = Job.new(
            REQUEST_WORKER,
            [sealed.argument, callback_name, raise_error_responses, checked_args, request_id],
            queue=self.queue,
            retry=True,
            jid=self._new_jid(),
            created_at=now,
            enqueued_at=now,
        )
        return Enqueued(
            request_id=request_id,
            callback_name=callback_name,
            request=request,
            callback_args=checked_args,
            raise_error_responses=raise_error_responses,
            job=job,
            sealed=sealed,
        )


_OPTION_NAMES: Final = EnqueueOptions.__optional_keys__


def split_options(method: str, url: str, options: EnqueueOptions) -> tuple[Request, EnqueueOptions]:
    """Return the request built from ``options`` and the job options left over."""
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(unknown)}")
    request = Request.build(
        method,
        url,
        headers=options.get("headers"),
        body=options.get("body"),
        json=options.get("json"),
        params=options.get("params"),
        timeout=options.get("timeout"),
        max_redirects=options.get("max_redirects"),
        preprocessors=options.get("preprocessors"),
    )
    return request, options
