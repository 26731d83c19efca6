"""Ruby enqueues, Python runs the request, a real Ruby Sidekiq runs the Ruby callback.

One stack per module (see ``e2e_harness``): the gem's ``PatientHttp::Sidekiq.execute`` (the
stand-in's without the gem) pushes RequestWorker jobs, ``patient-sidekiq run`` executes them
against the local HTTP app and pushes CallbackWorker jobs to the Ruby callback queue, and
``Interop::Recorder`` (called by the gem's CallbackWorker in the Ruby Sidekiq) records what
the Ruby callback received.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.interop.e2e_harness import E2E, e2e_stack
from tests.support.programs import free_port

pytestmark = [pytest.mark.interop, pytest.mark.integration]


@pytest.fixture(scope="module")
def stack() -> Iterator[E2E]:
    with e2e_stack() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_records(stack: E2E) -> None:
    stack.reset()


def _echo_headers(record: dict[str, object]) -> dict[str, str]:
    echo = record["json"]
    assert isinstance(echo, dict)
    return dict(echo["headers"])


def test_get_and_post_json_reach_the_ruby_callback(stack: E2E) -> None:
    get, post = stack.ruby_enqueue(
        [
            {
                "method": "get",
                "url": stack.url("/echo?a=1"),
                "params": {"b": "x y"},
                "headers": {"X-Custom": "hello"},
                "callback": "Interop::Recorder",
                "callback_args": {"user_id": 42, "tags": ["a", "b"], "nested": {"k": 1.5}},
            },
            {
                "method": "post",
                "url": stack.url("/echo"),
                "json": {"name": "café", "n": 7},
                "callback": "Interop::Recorder",
                "callback_args": {"kind": "post"},
                "raise_error_responses": True,
            },
        ]
    )
    records = stack.records([get["request_id"], post["request_id"]])

    got = records[get["request_id"]]
    assert got["runtime"] == "ruby"
    assert got["callback"] == "on_complete"
    assert got["class"] == "PatientHttp::Response"
    assert got["status"] == 200
    assert got["success"] is True
    assert got["headers"]["content-type"] == "application/json"
    # The gem's HTTP/1 stack (protocol-http1) consumes the framing headers: a Ruby app
    # never sees content-length or transfer-encoding in response.headers.
    assert "content-length" not in got["headers"]
    assert "transfer-encoding" not in got["headers"]
    assert got["url"] == stack.url("/echo?a=1&b=x+y")
    assert got["http_method"] == "get"
    assert got["redirects"] == []
    assert got["callback_args"] == {"user_id": 42, "tags": ["a", "b"], "nested": {"k": 1.5}}
    assert got["json"]["method"] == "GET"
    assert got["json"]["query"] == "a=1&b=x+y"
    assert json.loads(got["body"]) == got["json"]
    sent = _echo_headers(got)
    assert sent["x-custom"] == "hello"
    assert sent["x-request-id"] == get["request_id"]
    assert sent["user-agent"] == "PatientHttp"
    assert sent["accept-encoding"] == "gzip, identity"
    # The gem sends content-length: 0 on a request without a body.
    assert sent["content-length"] == "0"

    posted = records[post["request_id"]]
    assert posted["callback"] == "on_complete"
    assert posted["http_method"] == "post"
    assert posted["callback_args"] == {"kind": "post"}
    assert posted["json"]["method"] == "POST"
    assert json.loads(posted["json"]["body"].encode("latin-1")) == {"name": "café", "n": 7}
    assert _echo_headers(posted)["content-type"] == "application/json; charset=utf-8"
    sent_body = posted["json"]["body"].encode("latin-1")
    assert _echo_headers(posted)["content-length"] == str(len(sent_body))


def test_404_goes_to_on_complete_or_on_error_by_raise_error_responses(stack: E2E) -> None:
    plain, raising = stack.ruby_enqueue(
        [
            {
                "url": stack.url("/status/404"),
                "callback": "Interop::Recorder",
                "callback_args": {"raise": False},
                "raise_error_responses": False,
            },
            {
                "url": stack.url("/status/404"),
                "callback": "Interop::Recorder",
                "callback_args": {"raise": True},
                "raise_error_responses": True,
            },
        ]
    )
    records = stack.records([plain["request_id"], raising["request_id"]])

    completed = records[plain["request_id"]]
    assert completed["callback"] == "on_complete"
    assert completed["status"] == 404
    assert completed["success"] is False
    assert completed["body"] == "status 404"
    assert completed["callback_args"] == {"raise": False}

    failed = records[raising["request_id"]]
    assert failed["callback"] == "on_error"
    assert failed["class"] == "PatientHttp::ClientError"
    assert failed["error_type"] == "http_error"
    assert failed["callback_args"] == {"raise": True}
    assert failed["url"] == stack.url("/status/404")
    assert failed["http_method"] == "get"
    response = failed["response"]
    assert response["status"] == 404
    assert response["body"] == "status 404"
    assert response["request_id"] == raising["request_id"]
    assert response["callback_args"] == {"raise": True}


def test_connection_refused_goes_to_on_error(stack: E2E) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/nothing-here"
    [refused] = stack.ruby_enqueue(
        [{"method": "delete", "url": url, "callback": "Interop::Recorder",
          "callback_args": {"id": 9}}]
    )  # fmt: skip
    record = stack.record(refused["request_id"])
    assert record["callback"] == "on_error"
    assert record["error_type"] == "connection"
    # What the gem reports (Ruby's exception, as an async-http connect raises it).
    assert record["class"] == "Errno::ECONNREFUSED"
    assert record["message"] == f"Connection refused - connect(2) for 127.0.0.1:{port}"
    assert record["url"] == url
    assert record["http_method"] == "delete"
    assert record["callback_args"] == {"id": 9}
    assert record["response"] is None
