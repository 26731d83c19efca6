"""JobBuilder on its own: the RequestWorker job it builds, without Redis.

The byte-exact golden jobs are checked through the clients in ``test_enqueue.py``; these
tests pin the builder's own rules.
"""

from __future__ import annotations

import pytest

from patient_sidekiq.client.builder import JobBuilder, split_options
from patient_sidekiq.errors import ConfigurationError, NotJsonNativeError, UnknownCallbackError
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.sidekiq.job import TimestampDialect
from patient_sidekiq.wire.encryption import MessageEncryptor
from patient_sidekiq.wire.jobs import DEFAULT_REQUEST_QUEUE, REQUEST_WORKER
from patient_sidekiq.wire.request import Request


def builder(**overrides: object) -> JobBuilder:
    values: dict[str, object] = {
        "registry": CallbackRegistry(),
        "clock": lambda: 1700000000.5,
        "new_request_id": lambda: "req-1",
        "new_jid": lambda: "a" * 24,
    }
    values.update(overrides)
    return JobBuilder(**values)  # type: ignore[arg-type]


def test_builds_the_gem_job_with_its_five_arguments() -> None:
    request = Request.build("post", "https://api.example.com/x", json={"a": 1})
    built = builder().build(
        request, callback="App::Done", callback_args={"k": [1]}, raise_error_responses=True
    )
    job = built.job
    assert job.class_name == REQUEST_WORKER
    assert job.queue == DEFAULT_REQUEST_QUEUE
    assert job.jid == "a" * 24
    assert job["retry"] is True
    assert job["created_at"] == job["enqueued_at"] == 1700000000.5
    assert job.args == [request.to_wire(), "App::Done", True, {"k": [1]}, "req-1"]
    assert built.sealed.reference is None
    assert built.push_commands == [
        ("SADD", "queues", DEFAULT_REQUEST_QUEUE),
        ("LPUSH", f"queue:{DEFAULT_REQUEST_QUEUE}", job.raw),
    ]


def test_sidekiq_8_stamps_integer_milliseconds() -> None:
    job = (
        builder(dialect=TimestampDialect.MILLIS)
        .build(
            Request.build("get", "https://x.test/"),
            callback="App::Done",
            callback_args=None,
            raise_error_responses=None,
        )
        .job
    )
    assert job["created_at"] == 1700000000500
    assert job.args[2:4] == [None, None]


def test_a_large_payload_is_sealed_for_the_store_and_encrypted() -> None:
    encryptor = MessageEncryptor(["k1"])
    built = builder(encryptor=encryptor, store="redis", store_threshold=100).build(
        Request.build("post", "https://x.test/", body="x" * 500),
        callback="App::Done",
        callback_args=None,
        raise_error_responses=None,
    )
    assert built.sealed.reference is not None
    assert set(built.job.args[0]) == {"$ref"}
    assert built.sealed.stored_text is not None
    assert "x" * 500 not in built.sealed.stored_text


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"callback": "not a constant"}, UnknownCallbackError),
        ({"callback_args": {"s": {1, 2}}}, NotJsonNativeError),
        ({"raise_error_responses": "yes"}, TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    arguments: dict[str, object] = {
        "callback": "App::Done",
        "callback_args": None,
        "raise_error_responses": None,
        **kwargs,
    }
    with pytest.raises(error):
        builder().build(Request.build("get", "https://x.test/"), **arguments)  # type: ignore[arg-type]


def test_bad_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="queue"):
        builder(queue="")
    with pytest.raises(ConfigurationError, match="threshold"):
        builder(store_threshold=-1)


def test_split_options_builds_the_request_and_refuses_unknown_keywords() -> None:
    request, options = split_options(
        "get", "https://x.test/a", {"params": {"q": "1"}, "callback_args": {"n": 1}}
    )
    assert request.url == "https://x.test/a?q=1"
    assert options["callback_args"] == {"n": 1}
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        split_options("get", "https://x.test/", {"colour": "red"})  # type: ignore[typeddict-unknown-key]
