"""The CallbackWorker job text and the compact stats a finished request writes."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_sidekiq import keys
from patient_sidekiq.errors import InvalidJobError, NotJsonNativeError
from patient_sidekiq.redis_io.lua import LuaScript
from patient_sidekiq.redis_io.redis_bridge import Arg
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.wire.failures import HttpError, RequestError, TooManyRedirectsError
from patient_sidekiq.wire.jobs import CALLBACK_WORKER
from patient_sidekiq.wire.response import Response
from patient_sidekiq.worker import request_call
from patient_sidekiq.worker.request_call import callback_job_text, result_stats_args
from patient_sidekiq.worker.stats import TOTALS_TTL, Stats, duration_text

JID = "0123456789abcdef01234567"
CLAIM = LuaScript("inflight_claim.lua", "patient_sidekiq.worker")
CLAIM_KEYS = (keys.INFLIGHT_INDEX, keys.INFLIGHT_JOBS, keys.TOTALS, keys.QUEUES)


def job_new_text(packed: dict[str, Any], kind: str, name: str, queue: str, now: float | int) -> str:
    """What the push wrote before the template: a whole job built and serialised."""
    job = Job.new(
        CALLBACK_WORKER,
        [packed, kind, name],
        queue=queue,
        retry=True,
        jid=JID,
        created_at=now,
        enqueued_at=now,
    )
    return job.raw


def template_text(
    packed: dict[str, Any], kind: str, name: str, queue: str, now: float | int
) -> str:
    with mock.patch.object(request_call, "new_jid", return_value=JID):
        return callback_job_text(packed, kind, name, queue, now)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
times = st.floats(min_value=0, max_value=1e17, allow_nan=False) | st.integers(0, 2**62)


@settings(max_examples=300, deadline=None)
@given(
    packed=st.dictionaries(st.text(), json_values, max_size=6),
    kind=st.sampled_from(["response", "error"]),
    name=st.text(min_size=1),
    queue=st.text(min_size=1),
    now=times,
)
def test_the_template_writes_what_job_new_writes(
    packed: dict[str, Any], kind: str, name: str, queue: str, now: float | int
) -> None:
    try:
        expected = job_new_text(packed, kind, name, queue, now)
    except NotJsonNativeError as exc:
        expected = f"refused: {exc}"
    try:
        text = template_text(packed, kind, name, queue, now)
    except NotJsonNativeError as exc:
        text = f"refused: {exc}"
    assert text == expected


def test_the_template_spells_floats_and_stamps_as_ruby_does() -> None:
    packed = {"status": 200, "duration": 1e16, "body": None, "headers": {"é": "\u2028"}}
    for now in (1764851658.123456, 1764851658123, 1e15, 0.1):
        text = template_text(packed, "response", "Cb", "callbacks", now)
        assert text == job_new_text(packed, "response", "Cb", "callbacks", now)
    assert '"duration":1.0e+16' in text


def test_the_template_refuses_what_job_new_refuses() -> None:
    with pytest.raises(NotJsonNativeError, match="not valid Unicode: surrogates not allowed"):
        template_text({}, "response", "Cb\ud800", "callbacks", 1.5)
    with pytest.raises(NotJsonNativeError):
        template_text({"duration": float("nan")}, "response", "Cb", "callbacks", 1.5)
    with pytest.raises(InvalidJobError, match="valid queue name"):
        template_text({}, "response", "Cb", "", 1.5)


# --- the stats: compact claim arguments, counted by the claim script ---


def response(status: int, duration: float | None) -> Response:
    return Response.build(
        status=status,
        headers={},
        body=None,
        duration=duration or 0.0,
        request_id="r",
        url="http://x/",
        http_method="get",
    )


def old_stats_commands(
    durations: list[float], status: int | None, kind: str
) -> list[tuple[Arg, ...]]:
    """The totals commands the worker sent before the claim script counted them itself."""
    commands: list[tuple[Arg, ...]] = []
    for duration in durations[:-1]:
        commands += Stats.record_request_commands(duration, None)
    commands += Stats.record_request_commands(durations[-1], status)
    if kind:
        commands += Stats.record_error_commands(kind)
    expire = [command for command in commands if command[0] == "EXPIRE"][:1]
    return [command for command in commands if command[0] != "EXPIRE"] + expire


def test_result_stats_args_per_kind_of_result() -> None:
    hops = [(301, 0.25), (302, -1.0)]
    ok = response(200, 0.5)
    assert result_stats_args(ok, hops) == [3, "0.25", "0.0", "0.5", 200, "", TOTALS_TTL]
    assert result_stats_args(response(99, None)) == [1, "0.0", "", "", TOTALS_TTL]
    assert result_stats_args(HttpError.for_response(response(404, 1.5))) == [
        *(1, "1.5", "", "http_error", TOTALS_TTL)
    ]
    redirect = TooManyRedirectsError(
        url="u", http_method="get", duration=float("inf"), request_id="r", redirects=["a"]
    )
    assert result_stats_args(redirect) == [1, "0.0", "", "redirect", TOTALS_TTL]
    failure = RequestError(
        class_name="Errno::ECONNREFUSED",
        message="refused",
        backtrace=None,
        error_type="connection",
        duration=2.0,
        request_id="r",
        url="u",
        http_method="get",
    )
    assert result_stats_args(failure) == [1, "2.0", "", "exception", TOTALS_TTL]


def totals_and_ttl(client: redis.Redis) -> tuple[dict[bytes, bytes], int]:
    return client.hgetall(keys.TOTALS), client.ttl(keys.TOTALS)  # type: ignore[return-value]


durations_st = st.lists(
    st.floats() | st.sampled_from([0.1, 0.2, 1e-05, 123456.789, 1e20]), min_size=1, max_size=4
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    durations=durations_st,
    status=st.none() | st.integers(0, 700),
    kind=st.sampled_from(["", "http_error", "redirect", "exception"]),
    commands=st.booleans(),
)
def test_the_claim_script_delivers_and_counts_what_the_commands_did(
    redis_client: redis.Redis,
    durations: list[float],
    status: int | None,
    kind: str,
    commands: bool,
) -> None:
    # Twice (the second time onto existing totals): HINCRBYFLOAT's sums must come out the
    # same text, so the increments go in the same order.
    redis_client.delete(keys.TOTALS, keys.QUEUES, "queue:q", "extra")
    for _ in range(2):
        with redis_client.pipeline(transaction=True) as multi:
            for command in old_stats_commands(durations, status, kind):
                multi.execute_command(*command)
            multi.execute()
    expected = totals_and_ttl(redis_client)
    redis_client.delete(keys.TOTALS)

    counted = status if status is not None and 100 <= status < 600 else ""
    stats = [len(durations), *map(duration_text, durations), counted, kind, TOTALS_TTL]
    delivery = [*stats, "q", "queue:q", "job"]
    more = [3, "LPUSH", "extra", "x"] if commands else []
    for attempt in range(2):
        member = f"p/{attempt}"
        redis_client.hset(keys.INFLIGHT_JOBS, member, "{}")
        reply = redis_client.eval(
            CLAIM.source,
            4,
            *CLAIM_KEYS,
            *(member, "", 3600, 0, *delivery, *more),
        )
        assert reply == 1
    assert totals_and_ttl(redis_client) == expected
    assert redis_client.lrange("queue:q", 0, -1) == [b"job", b"job"]
    assert redis_client.smembers(keys.QUEUES) == {b"q"}
    assert redis_client.llen("extra") == (2 if commands else 0)


def test_a_claim_without_stats_counts_nothing(redis_client: redis.Redis) -> None:
    redis_client.delete(keys.TOTALS, keys.QUEUES, "q")
    redis_client.hset(keys.INFLIGHT_JOBS, "p/x", "{}")
    args = ("p/x", "", 3600, 0, 0, 3, "LPUSH", "q", "job")
    assert redis_client.eval(CLAIM.source, 4, *CLAIM_KEYS, *args) == 1
    assert redis_client.exists(keys.TOTALS, keys.QUEUES) == 0
    assert redis_client.lrange("q", 0, -1) == [b"job"]
    assert redis_client.eval(CLAIM.source, 4, *CLAIM_KEYS, *args) == 0  # claimed once only
