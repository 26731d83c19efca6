"""Enqueueing from trio code: :class:`AsyncClient`, the twin of the synchronous Client.

It writes through an entered :class:`~patient_sidekiq.redis_io.redis_bridge.RedisBridge`
with the worker's own payload settings, so async callbacks can enqueue follow-ups; jobs are
built by the same :class:`~patient_sidekiq.client.builder.JobBuilder`.

Redis keys touched: ``queues`` (SADD), ``queue:<queue>`` (LPUSH) and a stored payload's key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from patient_sidekiq import testing
from patient_sidekiq.client.builder import (
    CallbackRef,
    EnqueueOptions,
    JobBuilder,
    new_request_id,
    split_options,
)
from patient_sidekiq.client.enqueue import SidekiqVersion, dialect
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge, raise_first_error
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.registry.callbacks import registry as default_registry
from patient_sidekiq.sidekiq.job import new_jid
from patient_sidekiq.wire.jobs import DEFAULT_REQUEST_QUEUE
from patient_sidekiq.wire.packing import PayloadSettings
from patient_sidekiq.wire.payload_store import RedisPayloadStore
from patient_sidekiq.wire.request import Request

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncClient"]


class AsyncClient:
    """:class:`Client` for trio code (apps, and async callbacks enqueueing follow-ups).

    Writes through an entered ``bridge``; ``payloads`` are the worker's own payload settings
    (encryptor, stores, default store, threshold). A large payload for a
    :class:`~patient_sidekiq.wire.payload_store.RedisPayloadStore` on the same bridge is written
    in the push's MULTI; any other store is written first.
    """

    def __init__(
        self,
        bridge: RedisBridge,
        *,
        queue: str = DEFAULT_REQUEST_QUEUE,
        payloads: PayloadSettings | None = None,
        registry: CallbackRegistry = default_registry,
        sidekiq_version: SidekiqVersion = "7",
        clock: Callable[[], float] = time.time,
        new_request_id: Callable[[], str] = new_request_id,
        new_jid: Callable[[], str] = new_jid,
    ) -> None:
        self._bridge = bridge
        self._payloads = payloads if payloads is not None else PayloadSettings()
        self.builder = JobBuilder(
            queue=queue,
            encryptor=self._payloads.encryptor,
            store=self._payloads.default_store,
            store_threshold=self._payloads.store_threshold,
            registry=registry,
            dialect=dialect(sidekiq_version),
            clock=clock,
            new_request_id=new_request_id,
            new_jid=new_jid,
        )

    async def execute(
        self,
        request: Request,
        *,
        callback: CallbackRef,
        callback_args: Mapping[str, Any] | None = None,
        raise_error_responses: bool | None = False,
    ) -> str:
        """Enqueue ``request``; return its request id (see :meth:`Client.execute`)."""
        enqueued = self.builder.build(
            request,
            callback=callback,
            callback_args=callback_args,
            raise_error_responses=raise_error_responses,
        )
        mode = testing.current_mode()
        if mode is not None:
            await mode.handle_async(enqueued, self.builder.registry)
            return enqueued.request_id
        commands: list[Sequence[Arg]] = list(enqueued.push_commands)
        sealed = enqueued.sealed
        if sealed.reference is not None and sealed.stored_text is not None:
            store = self._payloads.stores[sealed.reference.store]
            if isinstance(store, RedisPayloadStore) and store.bridge is self._bridge:
                commands.insert(0, store.set_command(sealed.reference.key, sealed.stored_text))
                raise_first_error(await self._bridge.transaction(commands))
                return enqueued.request_id
            await store.put(sealed.reference.key, sealed.stored_text)
        raise_first_error(await self._bridge.pipeline(commands))
        return enqueued.request_id

    async def request(
        self,
        method: str,
        url: str,
        *,
        callback: CallbackRef,
        **options: Unpack[EnqueueOptions],
    ) -> str:
        """Build a request and enqueue it (see :meth:`Client.request`)."""
        request, options = split_options(method, url, options)
        return await self.execute(
            request,
            callback=callback,
            callback_args=options.get("callback_args"),
            raise_error_responses=options.get("raise_error_responses"),
        )

    async def get(
        self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]
    ) -> str:
        """Enqueue a GET; keyword arguments as :meth:`request`."""
        return await self.request("get", url, callback=callback, **kwargs)

    async def post(
        self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]
    ) -> str:
        """Enqueue a POST; keyword arguments as :meth:`request`."""
        return await self.request("post", url, callback=callback, **kwargs)

    async def put(
        self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]
    ) -> str:
        """Enqueue a PUT; keyword arguments as :meth:`request`."""
        return await self.request("put", url, callback=callback, **kwargs)

    async def patch(
        self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]
    ) -> str:
        """Enqueue a PATCH; keyword arguments as :meth:`request`."""
        return await self.request("patch", url, callback=callback, **kwargs)

    async def delete(
        self, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]
    ) -> str:
        """Enqueue a DELETE; keyword arguments as :meth:`request`."""
        return await self.request("delete", url, callback=callback, **kwargs)
