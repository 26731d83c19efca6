"""Opening the payload store a configuration entry describes (any of the gem's four adapters).

Apart from :mod:`patient_sidekiq.wire.payload_store` so that the store modules, which build
on it, are not imported by it.

Touches no Redis keys itself (a ``redis`` store writes through the bridge it is given).
"""

from __future__ import annotations

from patient_sidekiq import keys
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.wire.payload_store import (
    FilePayloadStore,
    PayloadStore,
    PayloadStoreSpec,
    RedisPayloadStore,
)
from patient_sidekiq.wire.s3_store import S3PayloadStore
from patient_sidekiq.wire.sql_store import SqlPayloadStore

__all__ = ["open_store"]


def open_store(spec: PayloadStoreSpec, bridge: RedisBridge) -> PayloadStore:
    """The store a configuration entry describes; a ``redis`` one writes through ``bridge``.

    The S3 and SQL stores import their client libraries (optional extras) only when they
    first connect, so configuring neither costs nothing.
    """
    if spec.adapter == "redis":
        prefix = keys.PAYLOAD_PREFIX if spec.key_prefix is None else spec.key_prefix
        return RedisPayloadStore(bridge, prefix=prefix, ttl=spec.ttl)
    if spec.adapter == "file":
        assert spec.directory is not None  # checked when the configuration was read
        return FilePayloadStore(spec.directory)
    if spec.adapter == "s3":
        assert spec.bucket is not None
        return S3PayloadStore(
            spec.bucket,
            key_prefix=spec.key_prefix,
            endpoint_url=spec.endpoint_url,
            region=spec.region,
        )
    assert spec.url is not None
    if spec.table is None:
        return SqlPayloadStore(spec.url)
    return SqlPayloadStore(spec.url, table=spec.table)
