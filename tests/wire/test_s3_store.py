"""The S3 payload store (the gem's ``:s3`` adapter) against a real S3-compatible server (moto).

Every object is checked with a separate boto3 client: the body must be the JSON text byte for
byte, with content type ``application/json`` and no metadata, under ``<key_prefix><key>``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from patient_sidekiq.errors import ConfigurationError, PayloadStoreError
from patient_sidekiq.wire.payload_store import PayloadStore, new_key
from patient_sidekiq.wire.s3_store import DEFAULT_S3_KEY_PREFIX, S3PayloadStore
from tests.support.programs import free_port

pytest_plugins = ["tests.support.s3"]

PAYLOAD = '{"status":200,"body":{"value":"é ✓ \\u0000 😀"},"headers":{"b":"1","a":"2"}}'

StoreFactory = Callable[..., S3PayloadStore]


@pytest.fixture
def make_store(s3_endpoint: str, s3_bucket: str) -> Iterator[StoreFactory]:
    """Build stores on the moto server (default: the test's bucket); closed after the test."""
    stores: list[S3PayloadStore] = []

    def make(bucket: str = s3_bucket, **options: Any) -> S3PayloadStore:
        if "client" not in options:
            options.setdefault("endpoint_url", s3_endpoint)
        store = S3PayloadStore(bucket, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def stored_object(client: Any, bucket: str, object_key: str) -> tuple[bytes, str, dict[str, str]]:
    """The body, content type and user metadata of an object, read with plain boto3."""
    response = client.get_object(Bucket=bucket, Key=object_key)
    with response["Body"] as body:
        data = body.read()
    return data, response["ContentType"], response["Metadata"]


def object_keys(client: Any, bucket: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_is_a_payload_store(make_store: StoreFactory) -> None:
    store: PayloadStore = make_store()
    assert store is not None
    assert DEFAULT_S3_KEY_PREFIX == "patient_http/payloads/"


async def test_put_get_delete_roundtrip(
    make_store: StoreFactory, s3_client: Any, s3_bucket: str
) -> None:
    store = make_store()
    key = new_key()
    await store.put(key, PAYLOAD)
    assert await store.get(key) == PAYLOAD

    object_key = f"patient_http/payloads/{key}"
    assert object_keys(s3_client, s3_bucket) == [object_key]
    body, content_type, metadata = stored_object(s3_client, s3_bucket, object_key)
    assert body == PAYLOAD.encode("utf-8")
    assert content_type == "application/json"
    assert metadata == {}

    await store.delete(key)
    assert await store.get(key) is None
    assert object_keys(s3_client, s3_bucket) == []


async def test_put_replaces(make_store: StoreFactory) -> None:
    store = make_store()
    await store.put("k", '{"a":1}')
    await store.put("k", "[]")
    assert await store.get("k") == "[]"


@pytest.mark.parametrize(
    ("key_prefix", "object_key"),
    [
        (None, "patient_http/payloads/abc"),
        ("custom/prefix-", "custom/prefix-abc"),
        ("", "abc"),  # as the gem: an empty prefix is kept, only nil means the default
    ],
)
async def test_key_prefix(
    make_store: StoreFactory,
    s3_client: Any,
    s3_bucket: str,
    key_prefix: str | None,
    object_key: str,
) -> None:
    store = make_store(key_prefix=key_prefix)
    assert store.object_key("abc") == object_key
    await store.put("abc", "{}")
    assert object_keys(s3_client, s3_bucket) == [object_key]
    assert stored_object(s3_client, s3_bucket, object_key)[0] == b"{}"
    assert await store.get("abc") == "{}"


async def test_stores_with_different_prefixes_do_not_see_each_other(
    make_store: StoreFactory,
) -> None:
    first, second = make_store(), make_store(key_prefix="other/")
    await first.put("same", '"first"')
    assert await second.get("same") is None
    await second.put("same", '"second"')
    assert await first.get("same") == '"first"'


async def test_reads_text_written_by_another_client(
    make_store: StoreFactory, s3_client: Any, s3_bucket: str
) -> None:
    # Exactly what a writer put, whatever its formatting: never re-serialized.
    text = '{ "b" : 1.50,\n  "a" : "\\u00e9é" }'
    s3_client.put_object(Bucket=s3_bucket, Key="patient_http/payloads/k", Body=text.encode("utf-8"))
    assert await make_store().get("k") == text


async def test_missing_key_reads_none_and_deletes_fine(
    make_store: StoreFactory, s3_client: Any, s3_bucket: str
) -> None:
    store = make_store()
    assert await store.get(new_key()) is None
    assert store.get_sync(new_key()) is None
    await store.delete(new_key())
    store.delete_sync(new_key())
    assert object_keys(s3_client, s3_bucket) == []


async def test_non_ascii_json_is_stored_as_utf8(
    make_store: StoreFactory, s3_client: Any, s3_bucket: str
) -> None:
    store = make_store()
    text = '["Grüße","日本語","😀","\\ud83d\\ude00","\u2028"]'
    await store.put("intl", text)
    assert await store.get("intl") == text
    body = stored_object(s3_client, s3_bucket, "patient_http/payloads/intl")[0]
    assert body == text.encode("utf-8")


async def test_text_that_is_not_utf8_is_refused(
    make_store: StoreFactory, s3_client: Any, s3_bucket: str
) -> None:
    store = make_store()
    with pytest.raises(PayloadStoreError, match="cannot be encoded as UTF-8"):
        await store.put("lone", '"\ud800"')  # a lone surrogate: no UTF-8 for it
    assert object_keys(s3_client, s3_bucket) == []

    s3_client.put_object(Bucket=s3_bucket, Key="patient_http/payloads/latin1", Body=b'"\xe9"')
    with pytest.raises(PayloadStoreError, match="not valid UTF-8"):
        await store.get("latin1")


@pytest.mark.parametrize("key", ["", "a\0b", "\0"])
async def test_bad_keys_are_refused(
    make_store: StoreFactory, s3_client: Any, s3_bucket: str, key: str
) -> None:
    store = make_store()
    with pytest.raises(PayloadStoreError, match="invalid payload key"):
        await store.put(key, "{}")
    with pytest.raises(PayloadStoreError, match="invalid payload key"):
        await store.get(key)
    with pytest.raises(PayloadStoreError, match="invalid payload key"):
        await store.delete(key)
    with pytest.raises(PayloadStoreError, match="invalid payload key"):
        store.put_sync(key, "{}")
    assert object_keys(s3_client, s3_bucket) == []


async def test_sync_halves_for_the_enqueue_client(make_store: StoreFactory) -> None:
    store = make_store()
    store.put_sync("sync", PAYLOAD)
    assert await store.get("sync") == PAYLOAD
    assert store.get_sync("sync") == PAYLOAD
    store.delete_sync("sync")
    assert await store.get("sync") is None


async def test_concurrent_calls_share_one_client(make_store: StoreFactory) -> None:
    # Every call starts in its own worker thread; the lazily built client must be one.
    store = make_store()
    keys = [f"k{i}" for i in range(16)]
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(store.put, key, f'"{key}"')
    clients = {id(store._s3())}
    results: dict[str, str | None] = {}

    async def read(key: str) -> None:
        results[key] = await store.get(key)
        clients.add(id(store._s3()))

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(read, key)
    assert results == {key: f'"{key}"' for key in keys}
    assert len(clients) == 1


async def test_missing_bucket_is_an_error_not_a_missing_payload(
    make_store: StoreFactory,
) -> None:
    store = make_store("no-such-bucket-here")
    with pytest.raises(PayloadStoreError, match=r"NoSuchBucket") as raised:
        await store.get("k")
    assert "s3://no-such-bucket-here/patient_http/payloads/k" in str(raised.value)
    with pytest.raises(PayloadStoreError, match=r"S3 put .*\(NoSuchBucket\)"):
        await store.put("k", "{}")
    with pytest.raises(PayloadStoreError, match=r"S3 delete .*\(NoSuchBucket\)"):
        await store.delete("k")


async def test_unreachable_endpoint_is_a_payload_store_error(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One attempt (boto's standard setting, from the environment) keeps the test quick.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = S3PayloadStore("bucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(PayloadStoreError, match=r"S3 put s3://bucket/patient_http/payloads/k"):
            await store.put("k", "{}")
        with pytest.raises(PayloadStoreError, match=r"S3 get s3://bucket/patient_http/payloads/k"):
            await store.get("k")
        with pytest.raises(PayloadStoreError, match=r"S3 delete s3://bucket/"):
            await store.delete("k")
        with pytest.raises(PayloadStoreError, match="EndpointConnectionError") as raised:
            store.put_sync("k", "{}")
    finally:
        store.close()
    # A PayloadStoreError, not a botocore exception that happens to be caught above.
    assert type(raised.value) is PayloadStoreError
    assert type(raised.value.__cause__).__module__.startswith("botocore")


async def test_a_bad_endpoint_url_is_a_payload_store_error(s3_endpoint: str) -> None:
    store = S3PayloadStore("bucket", endpoint_url="not a url")
    with pytest.raises(PayloadStoreError, match="cannot set up the S3 client"):
        await store.get("k")


async def test_buckets_are_addressed_in_the_path_on_a_custom_endpoint(
    make_store: StoreFactory, s3_endpoint: str
) -> None:
    # By host name, a virtual-hosted bucket would need DNS for <bucket>.localhost.
    store = make_store(endpoint_url=s3_endpoint.replace("127.0.0.1", "localhost"))
    await store.put("k", "{}")
    assert await store.get("k") == "{}"


async def test_a_given_client_is_used_and_left_open(
    make_store: StoreFactory, s3_client: Any
) -> None:
    store = make_store(client=s3_client)
    await store.put("k", "[1]")
    assert store._s3() is s3_client
    store.close()
    assert await store.get("k") == "[1]"  # neither closed nor replaced


def test_configuration_errors(s3_endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="bucket"):
        S3PayloadStore("")
    with pytest.raises(ConfigurationError, match="not both"):
        S3PayloadStore("b", client=object(), endpoint_url=s3_endpoint)
    with pytest.raises(ConfigurationError, match="not both"):
        S3PayloadStore("b", client=object(), region="eu-west-1")


def test_without_boto3_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail as if boto3 were not installed.
    monkeypatch.setitem(sys.modules, "botocore.session", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'patient-sidekiq\[s3\]'"):
        S3PayloadStore("bucket")


def test_repr_names_bucket_and_prefix(make_store: StoreFactory, s3_bucket: str) -> None:
    store = make_store(key_prefix="p/")
    assert repr(store) == f"S3PayloadStore(bucket={s3_bucket!r}, key_prefix='p/')"
    assert (store.bucket, store.key_prefix) == (s3_bucket, "p/")
