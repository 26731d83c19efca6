"""External payload storage (wire spec §6): references, the Redis store, the file store."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.errors import PayloadStoreError, RedisCommandError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.wire.payload_store import (
    REFERENCE_KEY,
    FilePayloadStore,
    PayloadReference,
    PayloadStore,
    RedisPayloadStore,
    is_reference,
    new_key,
)
from tests.support.golden import load_golden

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PAYLOAD = '{"status":200,"body":{"value":"é ✓ \\u0000"},"headers":{"b":"1","a":"2"}}'


# --- references ---


def test_reference_wire_shape() -> None:
    ref = PayloadReference(store="redis", key="26cd9780-572e-44bb-abd4-1c4b62bb3cf3")
    wire = ref.to_wire()
    assert json.dumps(wire, separators=(",", ":")) == (
        '{"$ref":{"store":"redis","key":"26cd9780-572e-44bb-abd4-1c4b62bb3cf3"}}'
    )
    assert PayloadReference.from_wire(wire) == ref
    assert PayloadReference.from_wire(json.loads(json.dumps(wire))) == ref
    assert REFERENCE_KEY == "$ref"
    assert is_reference(wire)
    assert not is_reference({"store": "redis"})
    assert not is_reference(["$ref"])
    assert not is_reference("$ref")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({}, "no '\\$ref'"),
        ({"$ref": "redis:abc"}, "must be an object"),
        ({"$ref": None}, "must be an object"),
        ({"$ref": {"key": "abc"}}, "'store'"),
        ({"$ref": {"store": "redis"}}, "'key'"),
        ({"$ref": {"store": 1, "key": "abc"}}, "'store'"),
        ({"$ref": {"store": "redis", "key": ["abc"]}}, "'key'"),
    ],
)
def test_malformed_references(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(PayloadStoreError, match=problem):
        PayloadReference.from_wire(data)


def test_new_key_is_a_random_uuid() -> None:
    first, second = new_key(), new_key()
    assert UUID_RE.match(first)
    assert first != second


# --- Redis store ---


@pytest.mark.integration
async def test_redis_store_put_get_delete(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    store: PayloadStore = RedisPayloadStore(bridge)
    key = new_key()
    await store.put(key, PAYLOAD)
    redis_key = f"patient_http:payloads:{key}"
    assert redis_key == keys.payload_key(key)
    assert redis_client.get(redis_key) == PAYLOAD.encode()
    assert redis_client.pttl(redis_key) == -1  # no TTL unless configured
    assert await store.get(key) == PAYLOAD
    await store.delete(key)
    assert redis_client.exists(redis_key) == 0
    await store.delete(key)  # idempotent
    assert await store.get(key) is None
    assert await store.get(new_key()) is None


@pytest.mark.integration
async def test_redis_store_prefix_and_ttl(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    store = RedisPayloadStore(bridge, prefix="custom:", ttl=60.5)
    await store.put("k1", "[1]")
    assert redis_client.get("custom:k1") == b"[1]"
    assert 59_000 < redis_client.pttl("custom:k1") <= 60_500
    assert redis_client.exists(keys.payload_key("k1")) == 0
    assert await store.get("k1") == "[1]"

    # Ruby rounds 1002.5 ms up to 1003 ms (a second, so the key outlives a loaded machine)
    short = RedisPayloadStore(bridge, ttl=1.0025)
    await short.put("k2", "{}")
    assert 500 < redis_client.pttl(keys.payload_key("k2")) <= 1003
    for bad in (0, -1, 0.0004, float("nan")):
        with pytest.raises(ValueError, match="ttl"):
            RedisPayloadStore(bridge, ttl=bad)


@pytest.mark.integration
async def test_redis_store_refuses_invalid_utf8(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    store = RedisPayloadStore(bridge)
    redis_client.set(keys.payload_key("bad"), b'"\xff"')
    with pytest.raises(PayloadStoreError, match="UTF-8"):
        await store.get("bad")
    redis_client.rpush(keys.payload_key("list"), "x")
    with pytest.raises(RedisCommandError, match="WRONGTYPE"):
        await store.get("list")
    with pytest.raises(PayloadStoreError, match="UTF-8"):
        await store.put("surrogate", '"\ud800"')


def _golden_stored_jobs() -> list[tuple[str, dict[str, Any]]]:
    golden = load_golden()
    return [
        (name, entry)
        for name, entry in golden["jobs"].items()
        if "payload_store_redis_key" in entry and "stored_value" in entry
    ]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "entry"), _golden_stored_jobs())
async def test_golden_redis_payloads(
    name: str, entry: dict[str, Any], bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    data = entry["job"]["args"][0]
    assert is_reference(data)
    ref = PayloadReference.from_wire(data)
    assert ref.store == "redis"
    assert ref.to_wire() == data
    assert keys.payload_key(ref.key) == entry["payload_store_redis_key"]
    redis_client.set(entry["payload_store_redis_key"], entry["stored_value"].encode())
    text = await RedisPayloadStore(bridge).get(ref.key)
    assert text == entry["stored_value"]
    assert text is not None
    assert text.encode() == entry["stored_value"].encode()


def test_golden_file_has_stored_payloads() -> None:
    assert len(_golden_stored_jobs()) >= 1


# --- file store ---


async def test_file_store_put_get_delete(tmp_path: Path) -> None:
    directory = tmp_path / "payloads" / "nested"
    store: PayloadStore = FilePayloadStore(directory)
    assert directory.is_dir()  # created when missing
    key = new_key()
    await store.put(key, PAYLOAD)
    assert (directory / f"{key}.json").read_bytes() == PAYLOAD.encode()
    assert await store.get(key) == PAYLOAD
    await store.put(key, "[2]")  # replaces
    assert await store.get(key) == "[2]"
    assert os.listdir(directory) == [f"{key}.json"]  # no temp files left behind
    await store.delete(key)
    assert os.listdir(directory) == []
    await store.delete(key)  # idempotent
    assert await store.get(key) is None


async def test_file_store_concurrent_writes_leave_whole_files(tmp_path: Path) -> None:
    store = FilePayloadStore(tmp_path)
    big = [json.dumps({"n": n, "pad": "x" * 200_000}) for n in range(8)]
    seen: list[str | None] = []

    async def reader() -> None:
        for _ in range(40):
            seen.append(await store.get("same"))

    async with trio.open_nursery() as nursery:
        for text in big:
            nursery.start_soon(store.put, "same", text)
        nursery.start_soon(reader)
    assert all(text is None or text in big for text in seen)
    assert os.listdir(tmp_path) == ["same.json"]


async def test_file_store_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_bytes(b'"\xff"')
    with pytest.raises(PayloadStoreError, match="UTF-8"):
        await FilePayloadStore(tmp_path).get("bad")


@pytest.mark.parametrize("key", ["", "../etc/passwd", "a/b", "..", "x..y", "a\\b", "a\0b"])
async def test_file_store_refuses_traversal(tmp_path: Path, key: str) -> None:
    store = FilePayloadStore(tmp_path / "store")
    with pytest.raises(PayloadStoreError, match="invalid payload key"):
        await store.put(key, "{}")
    with pytest.raises(PayloadStoreError, match="invalid payload key"):
        await store.get(key)
    with pytest.raises(PayloadStoreError, match="invalid payload key"):
        await store.delete(key)
    assert os.listdir(tmp_path) == ["store"]
    assert uuid.UUID(new_key())  # sanity: real keys never contain those characters
