"""The enqueue clients: gem-identical RequestWorker jobs, encryption, storage, validation."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from patient_sidekiq import keys
from patient_sidekiq.client import module_api
from patient_sidekiq.client.async_client import AsyncClient
from patient_sidekiq.client.enqueue import Client, FileStore, RedisStore
from patient_sidekiq.errors import (
    ConfigurationError,
    MessageAuthenticationError,
    NotJsonNativeError,
    RedisUnavailableError,
    UnknownCallbackError,
)
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.wire.encryption import MessageEncryptor
from patient_sidekiq.wire.jobs import CALLBACK_WORKER, DEFAULT_REQUEST_QUEUE, REQUEST_WORKER
from patient_sidekiq.wire.packing import PayloadSettings
from patient_sidekiq.wire.payload_store import FilePayloadStore, RedisPayloadStore
from patient_sidekiq.wire.request import Request
from tests.support.http import Server
from tests.support.programs import free_port
from tests.support.waiting import eventually
from tests.worker.test_request_worker import CALLBACKS, QUEUE, callback_jobs, running_worker

pytestmark = pytest.mark.integration

KEY = "oracle-secret-key"


class Recorder:
    """A Python callback class for the registry tests."""

    def on_complete(self, response: object) -> None:
        """Unused here."""

    def on_error(self, error: object) -> None:
        """Unused here."""


class Unregistered(Recorder):
    """Never registered."""


@pytest.fixture
def registry() -> CallbackRegistry:
    callbacks = CallbackRegistry()
    callbacks.register(Recorder, "Tests::Recorder")
    return callbacks


def fixed(golden_job: dict[str, Any], request_id: str) -> dict[str, Any]:
    """Injections that reproduce a golden job's clock, jid and request id."""
    return {
        "clock": lambda: golden_job["created_at"],
        "new_jid": lambda: golden_job["jid"],
        "new_request_id": lambda: request_id,
    }


def queued(client: redis.Redis, queue: str) -> list[str]:
    """The raw jobs of ``queue``, oldest first."""
    raws = cast(list[bytes], client.lrange(keys.queue(queue), 0, -1))
    return [raw.decode() for raw in reversed(raws)]


def with_enqueued_at(golden_job: dict[str, Any]) -> str:
    """The golden job (captured before the push) as it is stored once pushed."""
    return rubyjson.dumps({**golden_job, "enqueued_at": golden_job["created_at"]})


@pytest.fixture
def sync_client(redis_url: str, registry: CallbackRegistry) -> Iterator[Client]:
    with Client(redis_url, queue=QUEUE, registry=registry) as client:
        yield client


def test_golden_jobs_are_reproduced_byte_for_byte(
    redis_url: str, redis_client: redis.Redis, golden: dict[str, Any]
) -> None:
    jobs = golden["jobs"]
    plain = jobs["RequestWorker_plain"]
    defaults = jobs["RequestWorker_defaults_no_callback_args"]
    module_api = jobs["RequestWorker_via_PatientHttp.post(module API, raise_error_responses nil)"]

    with Client(
        redis_url, queue="default", **fixed(plain["job"], plain["returned_request_id"])
    ) as c:
        request = Request.build("get", "https://api.example.com/v1/items", params={"a": 1})
        returned = c.execute(
            request,
            callback="OracleCallback",
            callback_args={"user_id": 42},
            raise_error_responses=True,
        )
        assert returned == plain["returned_request_id"]
    ids = fixed(defaults["job"], defaults["returned_request_id"])
    with Client(redis_url, queue="default", **ids) as c:
        c.execute(
            Request.build("post", "https://api.example.com/v1/items", json={"x": 1}),
            callback="OracleCallback",
        )
    ids = fixed(module_api["job"], module_api["returned_request_id"])
    with Client(redis_url, queue="default", **ids) as c:
        c.post(
            "https://api.example.com/v1/items",
            callback="OracleCallback",
            json={"x": 1},
            callback_args={"a": "b"},
        )
    assert queued(redis_client, "default") == [
        with_enqueued_at(plain["job"]),
        with_enqueued_at(defaults["job"]),
        with_enqueued_at(module_api["job"]),
    ]
    assert redis_client.smembers(keys.QUEUES) == {b"default"}


def test_sidekiq_8_writes_integer_milliseconds(redis_url: str, redis_client: redis.Redis) -> None:
    with Client(redis_url, sidekiq_version="8", clock=lambda: 1795615729.9256558) as client:
        client.get("https://x.test/", callback="OracleCallback")
    job = Job.parse(queued(redis_client, DEFAULT_REQUEST_QUEUE)[0])
    assert job["created_at"] == job["enqueued_at"] == 1795615729925
    assert job.retry is True
    assert job.queue == "patient_http"
    with pytest.raises(ConfigurationError):
        Client(redis_url, sidekiq_version="5")  # type: ignore[arg-type]


def test_encryption_uses_the_first_key_of_the_list(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with Client(redis_url, encryption_key=["new-key", KEY]) as client:
        client.get("https://x.test/a", callback="OracleCallback", callback_args={"n": 1})
    job = Job.parse(queued(redis_client, DEFAULT_REQUEST_QUEUE)[0])
    envelope = job.args[0]
    assert list(envelope) == ["__encrypted__", "value"]
    decrypted = MessageEncryptor("new-key").decrypt(envelope)
    assert decrypted == Request.build("get", "https://x.test/a").to_wire()
    with pytest.raises(MessageAuthenticationError):
        MessageEncryptor(KEY).decrypt(envelope)
    assert job.args[1:4] == ["OracleCallback", None, {"n": 1}]


def test_encryption_key_comes_from_the_environment(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATIENT_HTTP_ENCRYPTION_KEY", f" {KEY} , old")
    monkeypatch.setenv("REDIS_URL", redis_url)
    with Client() as client:
        client.get("https://x.test/a", callback="OracleCallback")
    envelope = Job.parse(queued(redis_client, DEFAULT_REQUEST_QUEUE)[0]).args[0]
    assert MessageEncryptor(KEY).decrypt(envelope)["url"] == "https://x.test/a"


def test_large_payloads_go_to_the_redis_store_in_the_same_multi(
    redis_url: str, redis_client: redis.Redis, golden: dict[str, Any]
) -> None:
    store = RedisStore(ttl=600)
    with Client(redis_url, payload_store=store, payload_store_threshold=200) as client:
        client.get("https://x.test/small", callback="OracleCallback")
        client.post(
            "https://x.test/big",
            callback="OracleCallback",
            body=b"\x00" * 300,  # binary: base64, over the 200 bytes
            headers={"content-type": "application/octet-stream"},
        )
    small, large = (Job.parse(raw) for raw in queued(redis_client, DEFAULT_REQUEST_QUEUE))
    assert small.args[0]["url"] == "https://x.test/small"
    reference = large.args[0]
    assert list(reference) == ["$ref"]
    assert reference["$ref"]["store"] == "redis"
    redis_key = keys.payload_key(reference["$ref"]["key"])
    stored = redis_client.get(redis_key)
    assert stored is not None
    assert json.loads(stored)["url"] == "https://x.test/big"
    assert 0 < redis_client.pttl(redis_key) <= 600_000
    # The golden stored job has the same shape: {"$ref": {"store", "key"}}.
    golden_ref = golden["jobs"]["RequestWorker_encrypted_external(above threshold)"]["job"]["args"][
        0
    ]
    assert list(golden_ref["$ref"]) == list(reference["$ref"])


def test_a_store_with_its_own_redis_gets_the_payload_before_the_job_is_pushed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    own_url = redis_url.rsplit("/", 1)[0] + "/6"
    store = RedisStore(prefix="app:", url=own_url)
    with Client(redis_url, payload_store=store, payload_store_threshold=200) as client:
        client.post("https://x.test/big", callback="OracleCallback", body=b"\x00" * 300)
        opened = client._own_store_redis
        assert opened is not None
        client.post("https://x.test/big", callback="OracleCallback", body=b"\x00" * 300)
        assert client._own_store_redis is opened  # one connection serves every payload
    assert client._own_store_redis is None  # closed with the client
    own = redis.Redis.from_url(own_url)
    for raw in queued(redis_client, DEFAULT_REQUEST_QUEUE):
        key = Job.parse(raw).args[0]["$ref"]["key"]
        assert json.loads(own.get(f"app:{key}") or b"{}")["url"] == "https://x.test/big"
        assert redis_client.exists(f"app:{key}") == 0
    own.close()


def test_encrypted_payloads_are_stored_encrypted(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with Client(
        redis_url,
        encryption_key=KEY,
        payload_store=FileStore(tmp_path, name="files"),
        payload_store_threshold=10,
    ) as client:
        client.get("https://x.test/stored", callback="OracleCallback")
    reference = Job.parse(queued(redis_client, DEFAULT_REQUEST_QUEUE)[0]).args[0]
    assert reference["$ref"]["store"] == "files"
    text = (tmp_path / f"{reference['$ref']['key']}.json").read_text()
    assert MessageEncryptor(KEY).decrypt(json.loads(text))["url"] == "https://x.test/stored"
    assert redis_client.keys(f"{keys.PAYLOAD_PREFIX}*") == []


@pytest.mark.parametrize(
    ("callback", "callback_args", "error"),
    [
        (Unregistered, None, UnknownCallbackError),
        ("not_a_ruby_name", None, UnknownCallbackError),
        ("billing.callbacks.Missing", None, UnknownCallbackError),
        ("", None, UnknownCallbackError),
        ("OracleCallback", {"when": object()}, NotJsonNativeError),
        ("OracleCallback", {"f": float("nan")}, NotJsonNativeError),
        ("OracleCallback", ["not", "a", "dict"], NotJsonNativeError),
    ],
)
def test_bad_callbacks_and_args_are_refused_before_anything_is_written(
    redis_url: str,
    redis_client: redis.Redis,
    registry: CallbackRegistry,
    tmp_path: Path,
    callback: Any,
    callback_args: Any,
    error: type[Exception],
) -> None:
    store = FileStore(tmp_path)
    with (
        Client(redis_url, registry=registry, payload_store=store, payload_store_threshold=0) as c,
        pytest.raises(error),
    ):
        c.get("https://x.test/", callback=callback, callback_args=callback_args)
    assert redis_client.keys("*") == []
    assert list(tmp_path.iterdir()) == []


def test_registered_callbacks_are_written_by_their_job_name(
    sync_client: Client, redis_client: redis.Redis
) -> None:
    sync_client.get("https://x.test/", callback=Recorder)
    sync_client.get("https://x.test/", callback="Tests::Recorder")
    sync_client.get("https://x.test/", callback="tests.client.test_enqueue.Recorder")
    names = [Job.parse(raw).args[1] for raw in queued(redis_client, QUEUE)]
    assert names == ["Tests::Recorder", "Tests::Recorder", "tests.client.test_enqueue.Recorder"]


def test_argument_mistakes_are_type_errors(sync_client: Client) -> None:
    with pytest.raises(TypeError, match="timout"):
        sync_client.get("https://x.test/", callback=Recorder, timout=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        sync_client.execute("https://x.test/", callback=Recorder)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sync_client.get("https://x.test/", callback=Recorder, raise_error_responses="yes")  # type: ignore[typeddict-item]


def test_every_method_and_option_reaches_the_request(
    sync_client: Client, redis_client: redis.Redis
) -> None:
    sync_client.put(
        "https://x.test/p",
        callback=Recorder,
        headers={"X-A": "1"},
        body="text",
        params={"q": "a b"},
        timeout=2.5,
        max_redirects=0,
        preprocessors=["sign"],
        raise_error_responses=True,
    )
    sync_client.patch("https://x.test/p", callback=Recorder, json=[1])
    sync_client.delete("https://x.test/p", callback=Recorder)
    sync_client.request("POST", "https://x.test/p", callback=Recorder)
    jobs = [Job.parse(raw) for raw in queued(redis_client, QUEUE)]
    put_data = jobs[0].args[0]
    assert put_data["url"] == "https://x.test/p?q=a+b"
    assert put_data["headers"] == {"x-a": "1"}
    assert (put_data["timeout"], put_data["max_redirects"]) == (2.5, 0)
    assert put_data["preprocessors"] == ["sign"]
    assert jobs[0].args[2] is True
    assert [job.args[0]["http_method"] for job in jobs] == ["put", "patch", "delete", "post"]
    # The method helpers leave raise_error_responses to the worker, as PatientHttp.post does.
    assert [job.args[2] for job in jobs[1:]] == [None, None, None]


def test_unreachable_redis_is_a_redis_unavailable_error() -> None:
    with (
        Client(f"redis://127.0.0.1:{free_port()}/0") as client,
        pytest.raises(RedisUnavailableError),
    ):
        client.get("https://x.test/", callback="OracleCallback")


def test_module_level_api_uses_the_configured_client(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module_api, "_default", None)
    monkeypatch.setenv("REDIS_URL", redis_url)
    lazily = module_api.default_client()
    assert module_api.default_client() is lazily
    request_id = module_api.get("https://x.test/lazy", callback="OracleCallback")
    client = module_api.configure(redis_url=redis_url, queue="configured")
    assert module_api.default_client() is client
    module_api.post("https://x.test/a", callback="OracleCallback", json={"a": 1})
    module_api.put("https://x.test/a", callback="OracleCallback")
    module_api.patch("https://x.test/a", callback="OracleCallback")
    module_api.delete("https://x.test/a", callback="OracleCallback")
    module_api.request("get", "https://x.test/a", callback="OracleCallback")
    module_api.execute(Request.build("get", "https://x.test/e"), callback="OracleCallback")
    lazy_job = Job.parse(queued(redis_client, DEFAULT_REQUEST_QUEUE)[0])
    assert lazy_job.args[4] == request_id
    methods = [Job.parse(raw).args[0]["http_method"] for raw in queued(redis_client, "configured")]
    assert methods == ["post", "put", "patch", "delete", "get", "get"]
    client.close()
    monkeypatch.setattr(module_api, "_default", None)


def counter(prefix: str) -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers):012x}"


async def test_async_client_writes_the_same_jobs_as_the_client(
    redis_url: str, redis_client: redis.Redis, registry: CallbackRegistry
) -> None:
    def injections() -> dict[str, Any]:
        return {
            "clock": lambda: 1795615729.5,
            "new_jid": counter("000000000000"),
            "new_request_id": counter("00000000-0000-4000-8000-"),
            "registry": registry,
        }

    def enqueue_all(client: Any) -> list[Any]:
        return [
            client.get("https://x.test/a", callback=Recorder, params={"page": 1}),
            client.post("https://x.test/b", callback="Ruby::Cb", json={"k": [1.5, None]}),
            client.execute(
                Request.build("delete", "https://x.test/c"),
                callback="Tests::Recorder",
                callback_args={"n": 3},
            ),
        ]

    with Client(redis_url, queue="same", **injections()) as sync_client:
        sync_ids = enqueue_all(sync_client)
    sync_jobs = queued(redis_client, "same")
    redis_client.delete(keys.queue("same"))
    async with RedisBridge(redis_url) as bridge:
        async_client = AsyncClient(bridge, queue="same", **injections())
        async_ids = [await call for call in enqueue_all(async_client)]
    assert sync_ids == async_ids
    assert queued(redis_client, "same") == sync_jobs
    assert len(sync_jobs) == 3


async def test_async_client_stores_and_encrypts_with_the_worker_payload_settings(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    async with RedisBridge(redis_url) as bridge:
        payloads = PayloadSettings(
            encryptor=MessageEncryptor(KEY),
            stores={"redis": RedisPayloadStore(bridge), "file": FilePayloadStore(tmp_path)},
            default_store="redis",
            store_threshold=10,
        )
        await AsyncClient(bridge, payloads=payloads).get("https://x.test/r", callback="Cb")
        file_payloads = PayloadSettings(
            stores={"file": FilePayloadStore(tmp_path)}, default_store="file", store_threshold=10
        )
        await AsyncClient(bridge, payloads=file_payloads).get("https://x.test/f", callback="Cb")
    in_redis, in_file = (
        Job.parse(raw).args[0]["$ref"] for raw in queued(redis_client, "patient_http")
    )
    stored = redis_client.get(keys.payload_key(in_redis["key"]))
    assert stored is not None
    assert MessageEncryptor(KEY).decrypt(json.loads(stored))["url"] == "https://x.test/r"
    text = (tmp_path / f"{in_file['key']}.json").read_text()
    assert json.loads(text)["url"] == "https://x.test/f"


async def test_a_client_job_is_run_by_the_request_worker(
    redis_url: str, redis_client: redis.Redis, http_server: Server, registry: CallbackRegistry
) -> None:
    with Client(redis_url, queue=QUEUE, registry=registry, encryption_key=KEY) as client:
        request_id = client.get(
            http_server.url("/echo"), callback=Recorder, callback_args={"user": 7}
        )
    payloads = PayloadSettings(encryptor=MessageEncryptor(KEY))
    async with running_worker(redis_url, payloads=payloads):
        await eventually(lambda: len(callback_jobs(redis_client)) == 1)
    (job,) = callback_jobs(redis_client, CALLBACKS)
    assert job.class_name == CALLBACK_WORKER
    data, kind, name = job.args
    assert (kind, name) == ("response", "Tests::Recorder")
    response = MessageEncryptor(KEY).decrypt(data)
    assert response["status"] == 200
    assert response["request_id"] == request_id
    assert response["callback_args"] == {"user": 7}
    assert redis_client.llen(keys.queue(QUEUE)) == 0
    assert REQUEST_WORKER not in [j.class_name for j in callback_jobs(redis_client, CALLBACKS)]
