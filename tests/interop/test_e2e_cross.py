"""Crossing enqueuer and callback languages: Python enqueues for a Ruby callback, Ruby
enqueues for a Python callback.

The worker runs with ``-r tests.interop.e2e_harness``, which registers
``Interop::PyRecorder``: its CallbackWorker jobs go to the Python callback queue and run in
the worker's callback launcher; ``Interop::Recorder`` jobs go to the Ruby Sidekiq.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from patient_sidekiq.client.enqueue import Client
from tests.interop.e2e_harness import E2E, REQUEST_QUEUE, e2e_stack

pytestmark = [pytest.mark.interop, pytest.mark.integration]


@pytest.fixture(scope="module")
def stack() -> Iterator[E2E]:
    with e2e_stack(python_callbacks=True) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_records(stack: E2E) -> None:
    stack.reset()


def test_python_enqueued_requests_reach_the_ruby_callback(stack: E2E) -> None:
    with Client(stack.redis_url, queue=REQUEST_QUEUE) as client:
        posted = client.post(
            stack.url("/echo"),
            json={"from": "python", "ü": [1, 2]},
            callback="Interop::Recorder",
            callback_args={"order": 17, "tags": ["x"]},
            raise_error_responses=True,
        )
        failed = client.get(
            stack.url("/status/500"),
            callback="Interop::Recorder",
            callback_args={"order": 18},
            raise_error_responses=True,
        )
    records = stack.records([posted, failed])

    done = records[posted]
    assert done["runtime"] == "ruby"
    assert done["callback"] == "on_complete"
    assert done["status"] == 200
    assert done["http_method"] == "post"
    assert done["url"] == stack.url("/echo")
    assert done["callback_args"] == {"order": 17, "tags": ["x"]}
    assert json.loads(done["json"]["body"].encode("latin-1")) == {"from": "python", "ü": [1, 2]}
    headers = dict(done["json"]["headers"])
    assert headers["x-request-id"] == posted

    error = records[failed]
    assert error["runtime"] == "ruby"
    assert error["callback"] == "on_error"
    assert error["class"] == "PatientHttp::ServerError"
    assert error["error_type"] == "http_error"
    assert error["response"]["status"] == 500
    assert error["callback_args"] == {"order": 18}


def test_ruby_enqueued_requests_reach_the_python_callback(stack: E2E) -> None:
    ok, refused = stack.ruby_enqueue(
        [
            {
                "method": "put",
                "url": stack.url("/echo"),
                "json": {"from": "ruby"},
                "callback": "Interop::PyRecorder",
                "callback_args": {"lang": "ruby", "n": 1.25},
            },
            {
                "url": stack.url("/status/404"),
                "callback": "Interop::PyRecorder",
                "callback_args": {"lang": "ruby"},
                "raise_error_responses": True,
            },
        ]
    )
    records = stack.records([ok["request_id"], refused["request_id"]])

    done = records[ok["request_id"]]
    assert done["runtime"] == "python"
    assert done["callback"] == "on_complete"
    assert done["class"] == "Response"
    assert done["status"] == 200
    assert done["http_method"] == "put"
    assert done["url"] == stack.url("/echo")
    assert done["callback_args"] == {"lang": "ruby", "n": 1.25}
    assert done["json"]["method"] == "PUT"
    assert json.loads(done["json"]["body"]) == {"from": "ruby"}
    assert dict(done["json"]["headers"])["x-request-id"] == ok["request_id"]

    error = records[refused["request_id"]]
    assert error["runtime"] == "python"
    assert error["callback"] == "on_error"
    assert error["class"] == "PatientHttp::ClientError"
    assert error["error_type"] == "http_error"
    assert error["response"]["status"] == 404
    assert error["response"]["body"] == "status 404"
    assert error["callback_args"] == {"lang": "ruby"}
