"""The gem's Sidekiq Web tab, computed by Ruby from what the Python worker wrote.

With the real gem, ``E2E.web_tab`` renders the gem's own tab (Sidekiq 7.3.10's Web UI,
``ruby_interop/gem_task_monitor.rb``) and reads the numbers off the page, plus the gem's
``Stats#get_totals``; on the stand-in ``ruby_interop/task_monitor.rb`` computes them. The
numbers must equal what the requests imply, and what ``patient-sidekiq status --json``
(Python's reading of the same keys) shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from patient_sidekiq import keys
from patient_sidekiq.worker.inflight import gem_process_id
from tests.interop.e2e_harness import E2E, ROOT, e2e_stack
from tests.support.programs import free_port

pytestmark = [pytest.mark.interop, pytest.mark.integration]

CAPACITY = 40


@pytest.fixture(scope="module")
def stack() -> Iterator[E2E]:
    with e2e_stack(python_options=["-c", str(CAPACITY)]) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_totals(stack: E2E) -> None:
    stack.reset()
    stack.redis.delete(keys.TOTALS)


def _web_tab(stack: E2E) -> dict[str, Any]:
    tab = stack.web_tab()
    page = tab["page"]
    if page is not None:  # the real tab shows the totals too: they must be Stats' numbers
        totals = tab["totals"]
        assert page["total_requests"] == totals["requests"]
        assert page["total_errors"] == totals["errors"]
        assert page["max_capacity_exceeded"] == totals["max_capacity_exceeded"]
        assert page["http_status_counts"] == totals["http_status_counts"]
        assert page["error_type_counts"] == totals["error_type_counts"]
    return tab


def _python_status(stack: E2E) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "patient_sidekiq",
            "status",
            "--json",
            "--redis-url",
            stack.redis_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def _worker_key(stack: E2E) -> str:
    """The Web tab's ``host:pid`` of the worker (its process id without the random part)."""
    return gem_process_id(pid=stack.python_worker().process.pid).rsplit(":", 1)[0]


def test_totals_match_the_requests_python_ran(stack: E2E) -> None:
    refused = f"http://127.0.0.1:{free_port()}/"
    specs = [
        {"url": stack.url("/echo")},
        {"url": stack.url("/echo"), "method": "post", "json": {"n": 1}},
        {"url": stack.url("/status/404")},
        {"url": stack.url("/status/503"), "raise_error_responses": True},
        {"url": stack.url("/redirect/1")},
        {"url": refused},
    ]
    enqueued = stack.ruby_enqueue([{**spec, "callback": "Interop::Recorder"} for spec in specs])
    stack.records([item["request_id"] for item in enqueued])

    tab = _web_tab(stack)
    totals = tab["totals"]
    # As the gem counts (checked against its processor): every exchange counts as a
    # request, the followed redirect hop included (2 + 1 + 1 + 2 + 1), but only final
    # responses handed to on_complete count by status: not the 302 hop, not the 503 that
    # raise_error_responses turned into an error.
    assert totals["requests"] == 7
    assert totals["http_status_counts"] == {"200": 3, "404": 1}
    assert totals["errors"] == 2
    assert totals["error_type_counts"] == {"exception": 1, "http_error": 1}
    assert totals["max_capacity_exceeded"] == 0
    assert 0 < totals["duration"] < 60
    assert tab["avg_duration"] == round(totals["duration"] / 7, 3)

    python = _python_status(stack)["totals"]
    assert python["requests"] == totals["requests"]
    assert python["errors"] == totals["errors"]
    assert python["http_statuses"] == totals["http_status_counts"]
    assert python["errors_by_type"] == totals["error_type_counts"]
    assert python["max_capacity_exceeded"] == totals["max_capacity_exceeded"]
    assert python["duration"] == pytest.approx(totals["duration"], abs=1e-6)
    assert python["average_duration"] == tab["avg_duration"]


def test_inflight_and_capacity_match_while_requests_run(stack: E2E) -> None:
    idle = _web_tab(stack)
    key = _worker_key(stack)
    assert idle["processes"] == {key: {"inflight": 0, "max_capacity": CAPACITY}}
    assert (idle["current_inflight"], idle["max_capacity"], idle["utilization"]) == (0, 40, 0)

    enqueued = stack.ruby_enqueue(
        [{"url": stack.url("/slow?seconds=3"), "callback": "Interop::Recorder"} for _ in range(3)]
    )
    stack.wait_until(lambda: stack.redis.zcard(keys.INFLIGHT_INDEX) == 3, "3 requests in flight")

    busy = _web_tab(stack)
    python = _python_status(stack)
    assert busy["processes"] == {key: {"inflight": 3, "max_capacity": CAPACITY}}
    assert (busy["current_inflight"], busy["max_capacity"], busy["utilization"]) == (3, 40, 7.5)
    assert busy["pruned"] == []
    assert (python["inflight_total"], python["capacity_total"]) == (3, 40)
    assert python["utilization"] == busy["utilization"]
    [http] = [p["http"] for p in python["processes"] if p["http"] is not None]
    assert http == {"key": key, "inflight": 3, "capacity": 40, "utilization": 7.5}

    stack.records([item["request_id"] for item in enqueued])
    assert _web_tab(stack)["current_inflight"] == 0
