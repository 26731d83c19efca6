import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_sidekiq.errors import (
    ConfigurationError,
    EncryptionNotConfiguredError,
    MessageAuthenticationError,
    PatientSidekiqError,
    PayloadNotFoundError,
    UnknownPayloadStoreError,
)
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.wire.encryption import Digest, MessageEncryptor, PlaintextForm
from patient_sidekiq.wire.packing import PayloadSettings, delete_stored, pack, unpack
from patient_sidekiq.wire.payload_store import FilePayloadStore, PayloadReference, RedisPayloadStore
from tests.support.strategies import json_objects

ENCRYPTOR = MessageEncryptor(["oracle-secret-key", "oracle-old-key"])
SAMPLE = {"http_method": "get", "url": "https://example.com/ü?a=1", "headers": {}, "body": None}


def store_settings(bridge: RedisBridge, **kwargs: Any) -> PayloadSettings:
    return PayloadSettings(
        stores={"redis": RedisPayloadStore(bridge)}, default_store="redis", **kwargs
    )


async def test_plain_payloads_pass_through_unchanged() -> None:
    plain = PayloadSettings()
    assert await pack(SAMPLE, plain) == SAMPLE
    unpacked = await unpack(SAMPLE, plain)
    assert unpacked.data == SAMPLE
    assert unpacked.reference is None
    assert unpacked.decrypted is None


async def test_encryption_only_round_trips_and_reports_the_key() -> None:
    settings = PayloadSettings(encryptor=ENCRYPTOR)
    packed = await pack(SAMPLE, settings)
    assert list(packed) == ["__encrypted__", "value"]
    unpacked = await unpack(packed, settings)
    assert unpacked.data == SAMPLE
    assert unpacked.decrypted is not None
    assert unpacked.decrypted.key_index == 0
    assert unpacked.decrypted.digest is Digest.SHA1
    assert unpacked.decrypted.form is PlaintextForm.MARSHAL


@pytest.mark.integration
async def test_threshold_boundary_follows_the_gem(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    size = len(rubyjson.dumps(SAMPLE).encode())
    at_threshold = store_settings(bridge, store_threshold=size)
    assert await pack(SAMPLE, at_threshold) == SAMPLE  # <= threshold stays inline
    over = store_settings(bridge, store_threshold=size - 1)
    packed = await pack(SAMPLE, over)
    reference = PayloadReference.from_wire(packed)
    assert reference.store == "redis"
    stored = redis_client.get(f"patient_http:payloads:{reference.key}")
    assert stored == rubyjson.dumps(SAMPLE).encode()
    unpacked = await unpack(packed, over)
    assert unpacked.data == SAMPLE
    assert unpacked.reference == reference
    await delete_stored(unpacked.reference, over)
    assert redis_client.exists(f"patient_http:payloads:{reference.key}") == 0
    with pytest.raises(PayloadNotFoundError, match=f"redis/{reference.key}"):
        await unpack(packed, over)


@pytest.mark.integration
async def test_encrypt_then_store_like_the_gem(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    settings = store_settings(bridge, encryptor=ENCRYPTOR, store_threshold=10)
    packed = await pack(SAMPLE, settings)
    reference = PayloadReference.from_wire(packed)
    stored = rubyjson.loads(redis_client.get(f"patient_http:payloads:{reference.key}") or b"")
    assert list(stored) == ["__encrypted__", "value"]
    assert (await unpack(packed, settings)).data == SAMPLE


@pytest.mark.integration
@pytest.mark.parametrize(
    "name",
    [
        "RequestWorker_encrypted_external(above threshold)",
        "CallbackWorker_encrypted_external",
        "CallbackWorker_external_not_encrypted",
    ],
)
async def test_golden_stored_jobs_unpack(
    golden: dict[str, Any], bridge: RedisBridge, redis_client: redis.Redis, name: str
) -> None:
    vector = golden["jobs"][name]
    redis_client.set(vector["payload_store_redis_key"], vector["stored_value"])
    settings = store_settings(bridge, encryptor=MessageEncryptor("oracle-secret-key"))
    unpacked = await unpack(vector["job"]["args"][0], settings)
    if "fetched_and_decrypted" in vector:
        assert unpacked.data == vector["fetched_and_decrypted"]
    if name.endswith("not_encrypted"):
        assert unpacked.decrypted is None
        assert rubyjson.dumps(unpacked.data) == vector["stored_value"]
    else:
        assert unpacked.decrypted is not None
    assert unpacked.reference is not None


async def test_golden_inline_encrypted_job_unpacks(golden: dict[str, Any]) -> None:
    vector = golden["jobs"]["RequestWorker_encrypted_small(below threshold)"]
    unpacked = await unpack(vector["job"]["args"][0], PayloadSettings(encryptor=ENCRYPTOR))
    assert unpacked.data == vector["decrypted"]


async def test_file_store_round_trip(tmp_path: Path) -> None:
    settings = PayloadSettings(
        stores={"files": FilePayloadStore(tmp_path)}, default_store="files", store_threshold=0
    )
    packed = await pack(SAMPLE, settings)
    assert packed["$ref"]["store"] == "files"
    unpacked = await unpack(packed, settings)
    assert unpacked.data == SAMPLE
    await delete_stored(unpacked.reference, settings)
    assert list(tmp_path.iterdir()) == []


async def test_failures_are_specific() -> None:
    ref = {"$ref": {"store": "s3", "key": "k"}}
    with pytest.raises(UnknownPayloadStoreError, match="'s3' not registered"):
        await unpack(ref, PayloadSettings())
    encrypted = ENCRYPTOR.encrypt(SAMPLE)
    with pytest.raises(EncryptionNotConfiguredError):
        await unpack(encrypted, PayloadSettings())
    with pytest.raises(MessageAuthenticationError):
        await unpack(encrypted, PayloadSettings(encryptor=MessageEncryptor("other-key")))
    with pytest.raises(ConfigurationError, match="not one of the configured stores"):
        PayloadSettings(default_store="redis")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        json_objects,
        st.dictionaries(
            st.sampled_from(["$ref", "__encrypted__", "value", "store", "key"]),
            st.none()
            | st.booleans()
            | st.text()
            | st.dictionaries(st.sampled_from(["store", "key"]), st.text() | st.integers()),
        ),
    )
)
async def test_arbitrary_arguments_raise_only_package_errors(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    settings = PayloadSettings(encryptor=ENCRYPTOR, stores={"files": FilePayloadStore(tmp_path)})
    with contextlib.suppress(PatientSidekiqError):
        await unpack(data, settings)
