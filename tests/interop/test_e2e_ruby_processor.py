"""The other direction: Python enqueues, the REAL gem's processor runs the request.

``patient_sidekiq.client.enqueue.Client`` pushes RequestWorker jobs (encrypted, and large ones into
the Redis payload store) onto a queue worked only by the gem's async processor
(patient_http-sidekiq 1.0.1 in Sidekiq 7.3.10, ``E2E.start_ruby_processor``). The gem
pushes every CallbackWorker job to ``patient_http_callbacks``, the queue of the Python
callback launcher: ``Interop::PyRecorder`` runs there in Python, and ``Interop::Recorder``
(not a Python callback) is moved unchanged to the Ruby callback queue, where the gem's own
CallbackWorker runs it. So the gem reads what Python enqueued (request, encryption, stored
payloads, callback_args) and Python reads what the gem delivered.

Needs the real gem: on the stand-in (which has no processor) these tests skip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from patient_sidekiq import keys
from patient_sidekiq.client.enqueue import Client, RedisStore
from tests.interop.e2e_harness import E2E, PYTHON_CALLBACK_QUEUE, e2e_stack, require_ruby_side

pytestmark = [pytest.mark.interop, pytest.mark.integration]

GEM_QUEUE = "gem_requests"
KEY = "interop-gem-key"
THRESHOLD = 1000
PAYLOADS = "patient_http:payloads:*"


@pytest.fixture(scope="module")
def stack() -> Iterator[E2E]:
    if not require_ruby_side().real:
        pytest.skip("needs the real gem's processor (the stand-in has none)")
    options = [
        "--encryption-key", KEY,
        "--payload-store", "redis=redis",
        "--payload-store-threshold", str(THRESHOLD),
    ]  # fmt: skip
    with e2e_stack(
        python_options=options,
        python_callbacks=True,
        ruby_encryption_keys=[KEY],
        ruby_payload_store=True,
    ) as running:
        running.start_ruby_processor(
            queue=GEM_QUEUE,
            callback_queue=PYTHON_CALLBACK_QUEUE,
            encryption_keys=[KEY],
            payload_threshold=THRESHOLD,
        )
        yield running


@pytest.fixture(autouse=True)
def fresh_records(stack: E2E) -> None:
    stack.reset()


def _client(stack: E2E) -> Client:
    return Client(
        stack.redis_url,
        queue=GEM_QUEUE,
        encryption_key=KEY,
        payload_store=RedisStore(),
        payload_store_threshold=THRESHOLD,
    )


def test_the_gem_runs_python_enqueued_requests_for_ruby_callbacks(stack: E2E) -> None:
    document = {"rows": [{"i": i, "text": "é" * 20} for i in range(60)]}
    with _client(stack) as client:
        got = client.get(
            stack.url("/echo?a=1"),
            params={"b": "x y"},
            headers={"X-Custom": "hello"},
            callback="Interop::Recorder",
            callback_args={"n": 1, "tags": ["a"], "nested": {"k": 1.5}},
        )
        stored = client.post(
            stack.url("/echo"),
            json=document,
            callback="Interop::Recorder",
            callback_args={"big": True},
        )
        failed = client.get(
            stack.url("/status/503"),
            callback="Interop::Recorder",
            callback_args={"n": 3},
            raise_error_responses=True,
        )
    records = stack.records([got, stored, failed])

    echo = records[got]
    assert echo["runtime"] == "ruby"
    assert echo["callback"] == "on_complete"
    assert echo["class"] == "PatientHttp::Response"
    assert echo["status"] == 200
    assert echo["url"] == stack.url("/echo?a=1&b=x+y")
    assert echo["http_method"] == "get"
    assert echo["callback_args"] == {"n": 1, "tags": ["a"], "nested": {"k": 1.5}}
    sent = dict(echo["json"]["headers"])
    assert sent["x-custom"] == "hello"
    assert sent["x-request-id"] == got
    assert sent["user-agent"] == "PatientHttp"
    # The gem encrypted the result with the shared key; Ruby decrypted it.
    assert echo["delivery"]["encrypted"] is True

    big = records[stored]
    assert big["status"] == 200
    assert big["callback_args"] == {"big": True}
    # The gem fetched and decrypted the request Python stored, and stored its large result.
    assert json.loads(big["json"]["body"].encode("latin-1")) == document
    assert big["delivery"]["stored"] is True
    assert big["delivery"]["encrypted"] is True

    error = records[failed]
    assert error["callback"] == "on_error"
    assert error["class"] == "PatientHttp::ServerError"
    assert error["error_type"] == "http_error"
    assert error["response"]["status"] == 503
    assert error["callback_args"] == {"n": 3}

    # Nothing is left behind: the gem deleted the stored request, Ruby the stored result.
    deadline = time.monotonic() + 10
    while stack.redis.keys(PAYLOADS):
        assert time.monotonic() < deadline, f"payloads left: {stack.redis.keys(PAYLOADS)}"
        time.sleep(0.05)


def test_the_gem_runs_python_enqueued_requests_for_python_callbacks(stack: E2E) -> None:
    with _client(stack) as client:
        put = client.put(
            stack.url("/echo"),
            json={"from": "python"},
            callback="Interop::PyRecorder",
            callback_args={"lang": "python", "n": 1.25},
        )
        missing = client.get(
            stack.url("/status/404"),
            callback="Interop::PyRecorder",
            callback_args={"lang": "python"},
            raise_error_responses=True,
        )
        long = client.get(
            stack.url("/redirect/1"),
            callback="Interop::PyRecorder",
        )
    records = stack.records([put, missing, long])

    done = records[put]
    assert done["runtime"] == "python"
    assert done["callback"] == "on_complete"
    assert done["status"] == 200
    assert done["http_method"] == "put"
    assert done["callback_args"] == {"lang": "python", "n": 1.25}
    assert json.loads(done["json"]["body"]) == {"from": "python"}
    assert dict(done["json"]["headers"])["x-request-id"] == put

    error = records[missing]
    assert error["runtime"] == "python"
    assert error["callback"] == "on_error"
    assert error["class"] == "PatientHttp::ClientError"
    assert error["response"]["status"] == 404
    assert error["response"]["body"] == "status 404"

    followed = records[long]
    assert followed["runtime"] == "python"
    assert followed["url"] == stack.url("/redirect/0")
    assert followed["redirects"] == [stack.url("/redirect/1")]


def test_the_gem_counts_what_it_ran_in_the_shared_totals(stack: E2E) -> None:
    stack.redis.delete(keys.TOTALS)
    with _client(stack) as client:
        ids = [
            client.get(stack.url("/echo"), callback="Interop::PyRecorder"),
            client.get(stack.url("/redirect/1"), callback="Interop::PyRecorder"),
            client.get(
                stack.url("/status/503"), callback="Interop::PyRecorder", raise_error_responses=True
            ),
        ]
    stack.records(ids)
    totals = stack.web_tab()["totals"]
    # The same rule the Web-tab test asks of the Python worker: every exchange is a
    # request, only final on_complete responses count by status.
    assert totals["requests"] == 4
    assert totals["http_status_counts"] == {"200": 2}
    assert totals["error_type_counts"] == {"http_error": 1}
