"""Encryption with key rotation and external payload storage, Ruby <-> Python, end to end.

The Python worker runs with ``--encryption-key new --encryption-key old`` and a Redis
payload store with a 1000-byte threshold; the Ruby side's CallbackWorker (the gem's, or the
stand-in's) has the keys ``new,old`` and the ``redis`` payload store. Ruby requests are
encrypted (and stored when large) by the Ruby enqueuer; results are encrypted (and stored
when large) by Python and read by Ruby.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.interop.e2e_harness import E2E, e2e_stack

pytestmark = [pytest.mark.interop, pytest.mark.integration]

NEW, OLD = "interop-new-key", "interop-old-key"
PAYLOADS = "patient_http:payloads:*"


@pytest.fixture(scope="module")
def stack() -> Iterator[E2E]:
    options = [
        "--encryption-key", NEW,
        "--encryption-key", OLD,
        "--payload-store", "redis=redis",
        "--payload-store-threshold", "1000",
    ]  # fmt: skip
    with e2e_stack(
        python_options=options, ruby_encryption_keys=[NEW, OLD], ruby_payload_store=True
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_records(stack: E2E) -> None:
    stack.reset()


def _wait_no_payloads(stack: E2E) -> None:
    deadline = time.monotonic() + 10
    while stack.redis.keys(PAYLOADS):
        assert time.monotonic() < deadline, f"payloads left: {stack.redis.keys(PAYLOADS)}"
        time.sleep(0.05)


def test_ruby_encrypts_with_new_or_old_key_and_reads_pythons_encrypted_results(
    stack: E2E,
) -> None:
    request = {"url": stack.url("/status/201"), "callback": "Interop::Recorder"}
    [rotated] = stack.ruby_enqueue(
        [{**request, "callback_args": {"key": "new"}}], encryption_keys=[NEW, OLD]
    )
    [old_only] = stack.ruby_enqueue(
        [{**request, "callback_args": {"key": "old"}}], encryption_keys=[OLD]
    )
    [plain] = stack.ruby_enqueue([{**request, "callback_args": {"key": None}}])
    for enqueued in (rotated, old_only):
        assert set(enqueued["data"]) == {"__encrypted__", "value"}
    assert plain["data"]["url"] == stack.url("/status/201")

    ids = [rotated["request_id"], old_only["request_id"], plain["request_id"]]
    records = stack.records(ids)
    for request_id, key in zip(ids, ["new", "old", None], strict=True):
        record = records[request_id]
        assert record["callback"] == "on_complete"
        assert record["status"] == 201
        assert record["body"] == "status 201"
        assert record["callback_args"] == {"key": key}
        # Python encrypted every result (with the first key); Ruby decrypted it.
        assert record["delivery"]["encrypted"] is True
        assert record["delivery"]["stored"] is False


def test_errors_are_encrypted_too(stack: E2E) -> None:
    [enqueued] = stack.ruby_enqueue(
        [
            {
                "url": stack.url("/status/503"),
                "callback": "Interop::Recorder",
                "raise_error_responses": True,
            }
        ],
        encryption_keys=[OLD],
    )
    record = stack.record(enqueued["request_id"])
    assert record["callback"] == "on_error"
    assert record["class"] == "PatientHttp::ServerError"
    assert record["response"]["status"] == 503
    assert record["delivery"]["encrypted"] is True


def test_large_payloads_are_stored_both_ways(stack: E2E) -> None:
    # Over 4096 bytes: the request body travels gzipped, and so does the echoed response.
    document = {"rows": [{"i": i, "text": "é" * 20} for i in range(100)]}
    [stored] = stack.ruby_enqueue(
        [
            {
                "method": "post",
                "url": stack.url("/echo"),
                "json": document,
                "callback": "Interop::Recorder",
                "callback_args": {"big": True},
            }
        ],
        encryption_keys=[NEW, OLD],
        payload_threshold=1000,
    )
    reference = stored["data"]["$ref"]
    assert reference["store"] == "redis"
    stored_text = stack.redis.get(f"patient_http:payloads:{reference['key']}")
    assert stored_text is None or set(json.loads(stored_text)) == {"__encrypted__", "value"}

    record = stack.record(stored["request_id"])
    assert record["callback"] == "on_complete"
    assert record["status"] == 200
    assert record["callback_args"] == {"big": True}
    echoed = json.loads(record["json"]["body"].encode("latin-1"))
    assert echoed == document
    # Python stored the (large) result; Ruby fetched and decrypted it, then deleted it.
    assert record["delivery"]["stored"] is True
    assert record["delivery"]["encrypted"] is True
    assert record["delivery"]["store_key"] != reference["key"]
    # The request payload is deleted by Python after delivery, the result one by Ruby.
    _wait_no_payloads(stack)
