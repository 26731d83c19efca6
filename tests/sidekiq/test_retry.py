"""JobRetry rules (pure, fixed clock and seeded rng) and filing into retry/dead (real Redis)."""

from __future__ import annotations

import base64
import random
import zlib
from typing import Any, Literal

import pytest
import redis

from patient_sidekiq.errors import InvalidJobError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge, raise_first_error
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import Job, TimestampDialect
from patient_sidekiq.sidekiq.retry import (
    FailureOutcome,
    RetryPolicy,
    bury_commands,
    failure_commands,
    prepare_failure,
)

NOW = 1700000000.0
RUBY_ERROR = ("PatientHttp::MaxCapacityError", "too many", ["a.rb:1:in `x'", "b.rb:2:in `y'"])


def _policy(backoff: Literal["7", "8"] = "7", **kwargs: Any) -> RetryPolicy:
    return RetryPolicy(backoff=backoff, rng=random.Random(4), clock=lambda: NOW, **kwargs)


def _job(**fields: Any) -> Job:
    return Job.new("Foo", [1], jid="f" * 24, **fields)


def _fail(job: Job, policy: RetryPolicy | None = None, queue: str = "default") -> FailureOutcome:
    return prepare_failure(job, RUBY_ERROR, queue=queue, policy=policy or _policy())


def test_first_failure_fields() -> None:
    outcome = _fail(_job(), queue="fetched")
    assert outcome.kind == "retry"
    job = outcome.job
    assert job.queue == "fetched"
    assert job["error_message"] == "too many"
    assert job["error_class"] == "PatientHttp::MaxCapacityError"
    assert job["failed_at"] == NOW
    assert job["retry_count"] == 0
    assert "retried_at" not in job
    assert "error_backtrace" not in job
    assert job.raw.endswith(
        '"error_message":"too many","error_class":"PatientHttp::MaxCapacityError",'
        '"failed_at":1700000000.0,"retry_count":0}'
    )


def test_second_failure_fields_and_retry_queue() -> None:
    first = _fail(_job(retry_queue="slow")).job
    assert first.queue == "slow"
    second = _fail(first, _policy(dialect=TimestampDialect.MILLIS)).job
    assert second["retry_count"] == 1
    assert second["failed_at"] == NOW  # untouched
    assert second["retried_at"] == 1700000000000
    assert type(second["retried_at"]) is int
    assert list(second.data)[-1] == "retried_at"  # new key at the end, retry_count in place


def test_millis_first_failure() -> None:
    job = _fail(_job(), _policy(dialect=TimestampDialect.MILLIS)).job
    assert job.raw.endswith('"failed_at":1700000000000,"retry_count":0}')


def test_python_exception_name_and_message() -> None:
    try:
        Job.parse("nope")
    except InvalidJobError as exc:
        outcome = prepare_failure(_job(), exc, queue="q", policy=_policy())
    assert outcome.job["error_class"] == "patient_sidekiq.errors.InvalidJobError"
    assert outcome.job["error_message"].startswith("not valid JSON")
    builtin = prepare_failure(_job(), ValueError("x"), queue="q", policy=_policy())
    assert builtin.job["error_class"] == "ValueError"


def test_error_message_truncated_and_scrubbed() -> None:
    long = prepare_failure(_job(), ("E", "é" * 20_000, []), queue="q", policy=_policy())
    assert long.job["error_message"] == "é" * 10_000
    bad = prepare_failure(_job(), ("E", "a\ud800b", []), queue="q", policy=_policy())
    assert bad.job["error_message"] == "a\ufffdb"


def test_retry_false_discards_unchanged() -> None:
    job = _job(retry=False)
    outcome = _fail(job)
    assert outcome == FailureOutcome("discard", job, None)


def test_absent_retry_counts_as_true() -> None:
    job = Job.parse('{"class":"Foo","args":[]}')
    outcome = _fail(job)
    assert outcome.kind == "retry"
    assert outcome.job["retry"] is True
    assert outcome.job.raw.startswith('{"class":"Foo","args":[],"retry":true,"queue":"default"')


def test_retry_zero_goes_straight_to_dead() -> None:
    outcome = _fail(_job(retry=0))
    assert outcome.kind == "dead"
    assert outcome.score == NOW
    assert outcome.job["retry_count"] == 0


def test_retry_n_and_true_limits() -> None:
    job = _job(retry=2)
    kinds = []
    for _ in range(3):
        outcome = _fail(job)
        kinds.append(outcome.kind)
        job = outcome.job
    assert kinds == ["retry", "retry", "dead"]
    assert job["retry_count"] == 2

    at_limit = Job.parse('{"class":"A","args":[],"retry":true,"retry_count":23}')
    assert _fail(at_limit).kind == "retry"  # becomes 24 < 25
    assert _fail(at_limit.with_fields(retry_count=24)).kind == "dead"  # 25 >= 25
    assert _fail(at_limit, _policy(max_retries=24)).kind == "dead"


def test_dead_false_discards_after_exhaustion() -> None:
    outcome = _fail(_job(retry=0, dead=False))
    assert outcome.kind == "discard"
    assert outcome.score is None
    assert outcome.job["retry_count"] == 0
    assert "discarded_at" not in outcome.job
    eight = _fail(_job(retry=0, dead=False), _policy("8"))
    assert eight.job["discarded_at"] == 1700000000000


@pytest.mark.parametrize(
    ("backoff", "failed_ago", "retry_count", "expected"),
    [
        ("7", 100, 0, "retry"),  # within retry_for, count low
        ("7", 4000, 0, "dead"),  # time rule
        ("7", 100, 24, "dead"),  # count rule still applies in 7.x
        ("8", 100, 0, "retry"),
        ("8", 4000, 0, "dead"),
        ("8", 100, 24, "retry"),  # 8.1: retry_for replaces the count rule
    ],
)
def test_retry_for(
    backoff: Literal["7", "8"], failed_ago: float, retry_count: int, expected: str
) -> None:
    job = _job(retry_for=3600, failed_at=NOW - failed_ago, retry_count=retry_count)
    assert _fail(job, _policy(backoff)).kind == expected


def test_retry_for_reads_millis_failed_at() -> None:
    job = _job(retry_for=3600, failed_at=int((NOW - 4000) * 1000), retry_count=0)
    assert _fail(job, _policy("8")).kind == "dead"


def _decode(encoded: str) -> Any:
    return rubyjson.loads(zlib.decompress(base64.b64decode(encoded, validate=True)))


def test_backtrace_true_and_int() -> None:
    full = _fail(_job(backtrace=True)).job["error_backtrace"]
    assert "\n" not in full
    assert _decode(full) == RUBY_ERROR[2]
    assert _decode(_fail(_job(backtrace=1)).job["error_backtrace"]) == RUBY_ERROR[2][:1]
    assert _decode(_fail(_job(backtrace=0)).job["error_backtrace"]) == []
    assert "error_backtrace" not in _fail(_job(backtrace=False)).job


def test_python_backtrace_innermost_first() -> None:
    def inner() -> None:
        raise RuntimeError("boom")

    try:
        inner()
    except RuntimeError as exc:
        outcome = prepare_failure(_job(backtrace=True), exc, queue="q", policy=_policy())
    lines = _decode(outcome.job["error_backtrace"])
    assert lines[0].endswith(":in `inner'")
    assert lines[-1].endswith(":in `test_python_backtrace_innermost_first'")


@pytest.mark.parametrize(
    ("job_fields", "default", "expected"),
    [
        ({}, True, RUBY_ERROR[2]),  # no option: the default plays default_job_options
        ({}, 1, RUBY_ERROR[2][:1]),
        ({}, False, None),
        ({}, None, None),
        ({"backtrace": False}, True, None),  # the job's own option always wins
        ({"backtrace": None}, True, None),  # null is Ruby's nil: no backtrace either
        ({"backtrace": 1}, True, RUBY_ERROR[2][:1]),
        ({"backtrace": True}, False, RUBY_ERROR[2]),
    ],
)
def test_default_backtrace_stands_for_a_missing_option(
    job_fields: dict[str, Any], default: bool | int | None, expected: list[str] | None
) -> None:
    job = _job(**job_fields)
    outcome = prepare_failure(
        job, RUBY_ERROR, queue="q", policy=_policy(), default_backtrace=default
    )
    if expected is None:
        assert "error_backtrace" not in outcome.job
    else:
        assert _decode(outcome.job["error_backtrace"]) == expected
    # The option itself is never written into the job (only Sidekiq's fields are).
    assert ("backtrace" in outcome.job) == ("backtrace" in job_fields)


@pytest.mark.parametrize("count", [0, 1, 5, 24])
def test_delay_bounds_7(count: int) -> None:
    job = _job(retry_count=count - 1) if count else _job()
    seen = set()
    policy = _policy("7")
    for _ in range(300):
        outcome = _fail(job, policy)
        assert outcome.score is not None
        jitter = outcome.score - NOW - (count**4 + 15)
        assert jitter % (count + 1) == 0
        assert 0 <= jitter <= 9 * (count + 1)
        seen.add(jitter)
    assert len(seen) == 10  # every rand(10) value occurs


@pytest.mark.parametrize("count", [0, 1, 5, 24])
def test_delay_bounds_8(count: int) -> None:
    job = _job(retry_count=count - 1) if count else _job()
    policy = _policy("8")
    jitters = set()
    for _ in range(600):
        outcome = _fail(job, policy)
        assert outcome.score is not None
        jitter = outcome.score - NOW - (count**4 + 15)
        assert jitter == int(jitter)
        assert 0 <= jitter < 10 * (count + 1)
        jitters.add(jitter)
    if count <= 1:
        assert len(jitters) == 10 * (count + 1)


def test_seeded_rng_is_deterministic() -> None:
    assert _fail(_job(), _policy()).score == _fail(_job(), _policy()).score


async def file_failure(bridge: RedisBridge, outcome: FailureOutcome, policy: RetryPolicy) -> None:
    """What the processor does with an outcome: its commands in one MULTI."""
    raise_first_error(await bridge.transaction(failure_commands(outcome, policy)))


@pytest.mark.integration
async def test_file_failure_retry(redis_url: str, redis_client: redis.Redis) -> None:
    policy = _policy()
    outcome = _fail(_job(), policy)
    assert outcome.score is not None
    async with RedisBridge(redis_url) as bridge:
        await file_failure(bridge, outcome, policy)
        await file_failure(bridge, _fail(_job(retry=False), policy), policy)
    assert redis_client.zrange("retry", 0, -1, withscores=True) == [
        (outcome.job.raw.encode(), outcome.score)
    ]
    assert not redis_client.exists("dead")


@pytest.mark.integration
async def test_dead_trims_by_rank_and_age(redis_url: str, redis_client: redis.Redis) -> None:
    policy = _policy(dead_max_jobs=4, dead_timeout=1000)
    redis_client.zadd("dead", {"ancient": NOW - 5000, "old": NOW - 999})
    redis_client.zadd("dead", {f"recent{i}": NOW - 10 + i for i in range(4)})
    outcome = _fail(_job(retry=0), policy)
    async with RedisBridge(redis_url) as bridge:
        before = bridge.statistics().round_trips
        await file_failure(bridge, outcome, policy)
        assert bridge.statistics().round_trips - before == 1
    # "ancient" is past the age limit; the rank trim keeps the newest dead_max_jobs - 1.
    assert redis_client.zrange("dead", 0, -1, withscores=True) == [
        (b"recent2", NOW - 8),
        (b"recent3", NOW - 7),
        (outcome.job.raw.encode(), NOW),
    ]
    assert not redis_client.exists("retry")


@pytest.mark.integration
async def test_dead_trims_by_age(redis_url: str, redis_client: redis.Redis) -> None:
    policy = _policy()
    redis_client.zadd("dead", {"ancient": NOW - policy.dead_timeout - 1, "young": NOW - 5})
    async with RedisBridge(redis_url) as bridge:
        await file_failure(bridge, _fail(_job(retry=0), policy), policy)
    members: list[bytes] = redis_client.zrange("dead", 0, -1)  # type: ignore[assignment]
    assert b"ancient" not in members
    assert b"young" in members
    assert len(members) == 2


@pytest.mark.integration
async def test_bury_raw(redis_url: str, redis_client: redis.Redis) -> None:
    policy = _policy(dead_max_jobs=2)
    redis_client.zadd("dead", {"a": NOW - 2, "b": NOW - 1})
    async with RedisBridge(redis_url) as bridge:
        raise_first_error(await bridge.transaction(bury_commands("{not json", policy)))
    assert redis_client.zrange("dead", 0, -1, withscores=True) == [(b"{not json", NOW)]
