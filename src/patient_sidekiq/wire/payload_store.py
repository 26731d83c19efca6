"""External payload storage, compatible with the patient_http gem (wire spec §6).

A payload whose JSON is too big for the job is stored elsewhere and the job carries
``{"$ref": {"store": "<name>", "key": "<uuid>"}}`` instead. The stored value is the exact JSON
text the writer produced: it is handed back as ``str``, never re-serialized, so nothing (key
order, number formatting, an encryption envelope) changes on the way.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import PayloadStoreError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge

REFERENCE_KEY: Final = "$ref"
"""The only key of a reference object."""


def is_reference(data: object) -> bool:
    """Return whether ``data`` is a reference (a dict with a ``"$ref"`` key), valid or not."""
    return isinstance(data, dict) and REFERENCE_KEY in data


def new_key() -> str:
    """Return a fresh storage key: a random uuid, like Ruby's ``SecureRandom.uuid``."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class PayloadReference:
    """Where a stored payload lives: the name of a configured store and the key inside it."""

    store: str
    key: str

    def to_wire(self) -> dict[str, Any]:
        """Return the reference as the gem writes it (``store`` before ``key``)."""
        return {REFERENCE_KEY: {"store": self.store, "key": self.key}}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> PayloadReference:
        """Read a reference, raising :class:`PayloadStoreError` naming what is wrong."""
        if REFERENCE_KEY not in data:
            raise PayloadStoreError(f"not a payload reference: no {REFERENCE_KEY!r} key")
        ref = data[REFERENCE_KEY]
        if not isinstance(ref, dict):
            raise PayloadStoreError(
                f"payload reference {REFERENCE_KEY!r} must be an object, not {type(ref).__name__}"
            )
        for part in ("store", "key"):
            if not isinstance(ref.get(part), str):
                raise PayloadStoreError(
                    f"payload reference needs a string {part!r}, got {ref.get(part)!r}"
                )
        return cls(store=ref["store"], key=ref["key"])


@dataclass(frozen=True)
class PayloadStoreSpec:
    """One external payload store to register, as the gem's ``register_payload_store``.

    ``redis`` stores use the worker's Redis, or their own ``url`` (the gem's ``redis:``
    option), with keys ``<key_prefix><uuid>`` (the gem's ``key_prefix:``, default
    ``patient_http:payloads:``) and ``ttl`` seconds or no expiry; ``file`` stores write
    ``<directory>/<key>.json`` (the directory must be shared with the Ruby side); ``s3``
    stores write ``<key_prefix><key>`` objects to ``bucket`` (default prefix
    ``patient_http/payloads/``; ``endpoint_url`` and ``region`` for what Ruby passes as a
    configured ``Aws::S3::Bucket``); ``active_record`` stores write rows of ``table``
    (default ``patient_http_payloads``) in the database at ``url`` (SQLite or PostgreSQL).
    """

    name: str
    adapter: Literal["redis", "file", "s3", "active_record"]
    directory: str | None = None
    ttl: float | None = None
    key_prefix: str | None = None
    url: str | None = field(default=None, repr=False)  # may hold a password
    bucket: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    table: str | None = None


class PayloadStore(Protocol):
    """What the worker needs from a store; every key is the bare uuid (no prefix)."""

    async def put(self, key: str, json_text: str) -> None:
        """Store ``json_text`` under ``key``, replacing what was there."""

    async def get(self, key: str) -> str | None:
        """Return the stored JSON text, or ``None`` if there is none."""

    async def delete(self, key: str) -> None:
        """Remove the payload; deleting a missing one is not an error."""


class ThreadedPayloadStore:
    """Base of the stores whose client blocks (S3, SQL): the async methods of
    :class:`PayloadStore` run the subclass's ``*_sync`` methods in a worker thread, which
    the synchronous enqueue client calls directly."""

    def put_sync(self, key: str, json_text: str) -> None:
        """Store ``json_text`` under ``key``, replacing what was there (calling thread)."""
        raise NotImplementedError

    def get_sync(self, key: str) -> str | None:
        """Return the stored JSON text, or ``None`` if there is none (calling thread)."""
        raise NotImplementedError

    def delete_sync(self, key: str) -> None:
        """Remove the payload; a missing one is not an error (calling thread)."""
        raise NotImplementedError

    async def put(self, key: str, json_text: str) -> None:
        """:meth:`put_sync` in a worker thread."""
        await trio.to_thread.run_sync(self.put_sync, key, json_text)

    async def get(self, key: str) -> str | None:
        """:meth:`get_sync` in a worker thread."""
        return await trio.to_thread.run_sync(self.get_sync, key)

    async def delete(self, key: str) -> None:
        """:meth:`delete_sync` in a worker thread."""
        await trio.to_thread.run_sync(self.delete_sync, key)


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadStoreError(f"stored payload {where} is not valid UTF-8: {exc}") from exc


def _encode(json_text: str, where: str) -> bytes:
    try:
        return json_text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: JSON Ruby could never read back
        raise PayloadStoreError(f"payload for {where} cannot be encoded as UTF-8: {exc}") from exc


def ttl_millis(ttl: float | None) -> int | None:
    """Return a store TTL in seconds as the milliseconds of ``SET … PX`` (``None``: no TTL).

    Raises ``ValueError`` for a TTL under half a millisecond, which Redis would refuse.
    """
    if ttl is None:
        return None
    # Ruby's ``(ttl * 1000).round`` rounds halves away from zero (Python's round would
    # not); Redis refuses PX 0, so anything under half a millisecond is refused here.
    ttl_ms = math.floor(ttl * 1000 + 0.5) if math.isfinite(ttl) else 0
    if ttl_ms < 1:
        raise ValueError(f"payload ttl must be at least 0.0005 seconds, not {ttl!r}")
    return ttl_ms


def redis_set_command(
    key: str, json_text: str, *, prefix: str = keys.PAYLOAD_PREFIX, ttl_ms: int | None = None
) -> tuple[str, ...]:
    """Return the gem's ``:redis`` adapter write: ``SET <prefix><key> <json> [PX ttl_ms]``.

    Raises :class:`PayloadStoreError` for text that cannot be UTF-8 (lone surrogates).
    """
    redis_key = keys.payload_key(key, prefix)
    _encode(json_text, redis_key)
    if ttl_ms is None:
        return ("SET", redis_key, json_text)
    return ("SET", redis_key, json_text, "PX", str(ttl_ms))


class RedisPayloadStore:
    """The gem's ``:redis`` adapter: ``SET <prefix><key> <json> [PX ttl_ms]``, GET, DEL."""

    def __init__(
        self, bridge: RedisBridge, *, prefix: str = keys.PAYLOAD_PREFIX, ttl: float | None = None
    ) -> None:
        self._bridge = bridge
        self._prefix = prefix
        self._ttl_ms = ttl_millis(ttl)

    @property
    def bridge(self) -> RedisBridge:
        """The bridge this store writes through (a writer may batch its SET with a push)."""
        return self._bridge

    def set_command(self, key: str, json_text: str) -> tuple[str, ...]:
        """Return the SET that :meth:`put` sends, for a caller that batches it."""
        return redis_set_command(key, json_text, prefix=self._prefix, ttl_ms=self._ttl_ms)

    async def put(self, key: str, json_text: str) -> None:
        """Store the JSON text, with the configured expiry if any."""
        await self._bridge.execute(*self.set_command(key, json_text))

    async def get(self, key: str) -> str | None:
        """Return the stored JSON text, or ``None`` when the key is missing or expired."""
        redis_key = keys.payload_key(key, self._prefix)
        data = await self._bridge.execute("GET", redis_key)
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise PayloadStoreError(f"unexpected reply for {redis_key}: {data!r}")
        return _decode(data, redis_key)

    async def delete(self, key: str) -> None:
        """Delete the stored payload (idempotent)."""
        await self._bridge.execute("DEL", keys.payload_key(key, self._prefix))


class FilePayloadStore:
    """The gem's ``:file`` adapter: ``<directory>/<key>.json``, for development and tests.

    File I/O runs in a worker thread: this store is rare and off the hot path, so the thread
    hop is fine, and it keeps the trio loop from blocking on a slow disk. Files are created
    private to the user (mode 0600, as ``tempfile.mkstemp`` makes them): payloads may hold
    secrets.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._directory = Path(directory)
        try:
            self._directory.mkdir(parents=True, exist_ok=True)  # like the gem: mkdir_p at setup
        except OSError as exc:
            raise PayloadStoreError(f"cannot create payload directory {directory}: {exc}") from exc

    def _path(self, key: str) -> Path:
        # The key comes from a job: refuse anything that could leave the directory.
        if not key or "/" in key or "\\" in key or ".." in key or "\0" in key:
            raise PayloadStoreError(f"invalid payload key {key!r}")
        return self._directory / f"{key}.json"

    async def put(self, key: str, json_text: str) -> None:
        """Write the file atomically: readers see the old file or the whole new one."""
        await trio.to_thread.run_sync(self.put_sync, key, json_text)

    def put_sync(self, key: str, json_text: str) -> None:
        """:meth:`put` for synchronous callers (the enqueue client), in the calling thread."""
        path = self._path(key)
        self._write(path, _encode(json_text, str(path)))

    def _write(self, path: Path, data: bytes) -> None:
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self._directory, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(temp, path)  # atomic on POSIX within one directory
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as exc:
            raise PayloadStoreError(f"cannot write payload {path}: {exc}") from exc

    async def get(self, key: str) -> str | None:
        """Return the file's text, or ``None`` if it does not exist."""
        path = self._path(key)
        try:
            data = await trio.to_thread.run_sync(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PayloadStoreError(f"cannot read payload {path}: {exc}") from exc
        return _decode(data, str(path))

    async def delete(self, key: str) -> None:
        """Remove the file; a missing file is fine."""
        path = self._path(key)
        try:
            await trio.to_thread.run_sync(path.unlink, True)
        except OSError as exc:
            raise PayloadStoreError(f"cannot delete payload {path}: {exc}") from exc
