"""A failing Python callback's retry entry, read by the real Sidekiq 7.3.10.

Our worker files the CallbackWorker job with ``error_backtrace`` (the worker's default
``backtrace: true``); Ruby's ``Sidekiq::RetrySet`` entry (``JobRecord#error_backtrace``, what
the Web UI's Retries and Dead pages render) decompresses it to exactly the lines we wrote,
Ruby-shaped and innermost first.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from typing import cast

import pytest
import redis

from patient_sidekiq import keys
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.wire.response import Response
from tests.interop.conftest import SIDEKIQ_CLIENT, run_ruby
from tests.support.oracle import oracle_env, require_oracle
from tests.support.waiting import eventually
from tests.worker.test_callback_worker import (
    CALLBACKS,
    NAME,
    callback_job,
    idle,
    registry_with,
    response,
    running_callbacks,
)

pytestmark = [pytest.mark.interop, pytest.mark.integration]

RUBY_READ_RETRIES = (
    SIDEKIQ_CLIENT
    + r"""
entries = Sidekiq::RetrySet.new.map do |e|
  {"jid" => e.jid, "error_class" => e["error_class"], "backtrace" => e.error_backtrace}
end
puts JSON.generate({"version" => Sidekiq::VERSION, "entries" => entries})
"""
)


class ChargeFailed(Exception):
    pass


class Charging:
    def on_complete(self, response: Response) -> None:
        self.charge(response)

    def charge(self, response: Response) -> None:
        raise ChargeFailed("card declined")

    def on_error(self, error: Exception) -> None:
        raise AssertionError("not called")


async def test_ruby_reads_the_backtrace_of_a_failing_python_callback(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    root = require_oracle()
    redis_client.delete(keys.RETRY)
    job = callback_job(response().to_wire())
    with caplog.at_level(logging.CRITICAL):  # the failure's ERROR line is tested elsewhere
        async with running_callbacks(redis_url, registry_with(Charging)) as launcher:
            redis_client.lpush(keys.queue(CALLBACKS), job.raw)
            await eventually(lambda: idle(redis_client, launcher))
    [raw] = cast(list[bytes], redis_client.zrange(keys.RETRY, 0, -1))
    ours = json.loads(zlib.decompress(base64.b64decode(Job.parse(raw)["error_backtrace"])))
    assert ours[0] == f"{__file__}:{Charging.charge.__code__.co_firstlineno + 1}:in `charge'"
    assert ours[1].endswith(":in `on_complete'")

    report = run_ruby(RUBY_READ_RETRIES, {"url": redis_url}, env=oracle_env(root))
    assert report["version"] == "7.3.10"
    [entry] = report["entries"]
    assert entry["jid"] == job.jid
    assert entry["backtrace"] == ours
    assert entry["error_class"].endswith("ChargeFailed")
    assert NAME in json.loads(raw)["args"]
