"""Stats (``sidekiq:patient_http:totals``, wire spec §8) against a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from patient_sidekiq import keys
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.worker.stats import TOTALS_TTL, Stats

THIRTY_DAYS = 30 * 24 * 3600


@pytest.fixture
async def stats(redis_url: str) -> AsyncIterator[Stats]:
    async with RedisBridge(redis_url) as bridge:
        yield Stats(bridge)


def totals(client: redis.Redis) -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(keys.TOTALS)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def counts(client: redis.Redis) -> dict[str, float | int]:
    """The totals as the gem's Web tab reads them: ``duration`` a float, the rest ints."""
    return {k: float(v) if k == "duration" else int(v) for k, v in totals(client).items()}


def test_key_and_ttl() -> None:
    assert keys.TOTALS == "sidekiq:patient_http:totals"
    assert TOTALS_TTL == THIRTY_DAYS


def test_builders() -> None:
    assert Stats.record_request_commands(0.5, 200) == [
        ("HINCRBY", keys.TOTALS, "requests", 1),
        ("HINCRBYFLOAT", keys.TOTALS, "duration", "0.5"),
        ("HINCRBY", keys.TOTALS, "http_status:200", 1),
        ("EXPIRE", keys.TOTALS, THIRTY_DAYS),
    ]
    assert Stats.record_error_commands("redirect") == [
        ("HINCRBY", keys.TOTALS, "errors", 1),
        ("HINCRBY", keys.TOTALS, "errors:redirect", 1),
        ("EXPIRE", keys.TOTALS, THIRTY_DAYS),
    ]
    assert Stats.record_capacity_refusal_commands() == [
        ("HINCRBY", keys.TOTALS, "max_capacity_exceeded", 1),
        ("EXPIRE", keys.TOTALS, THIRTY_DAYS),
    ]
    # no response, or not an HTTP status: no http_status field
    assert len(Stats.record_request_commands(1.0, None)) == 3
    assert len(Stats.record_request_commands(1.0, 99)) == 3
    assert Stats.record_request_commands(float("nan"), None)[1][3] == "0.0"


def test_unknown_error_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown error kind"):
        Stats.record_error_commands("timeout")


@pytest.mark.integration
async def test_exact_fields_after_updates(stats: Stats, redis_client: redis.Redis) -> None:
    await stats.apply(Stats.record_request_commands(0.25, 200))
    await stats.apply(Stats.record_request_commands(1.5, 200))
    await stats.apply(Stats.record_request_commands(0.125, 404))
    await stats.apply(Stats.record_request_commands(2.0, None))
    await stats.apply(Stats.record_error_commands("http_error"))
    await stats.apply(Stats.record_error_commands("exception"))
    await stats.apply(Stats.record_error_commands("exception"))
    await stats.apply(Stats.record_error_commands("redirect"))
    await stats.record_capacity_refusal()
    raw = totals(redis_client)
    assert set(raw) == {
        "requests",
        "duration",
        "http_status:200",
        "http_status:404",
        "errors",
        "errors:http_error",
        "errors:exception",
        "errors:redirect",
        "max_capacity_exceeded",
    }
    assert raw["requests"] == "4"
    assert float(raw["duration"]) == pytest.approx(3.875)
    assert raw["http_status:200"] == "2"
    assert raw["errors"] == "4"
    assert raw["errors:exception"] == "2"
    assert raw["max_capacity_exceeded"] == "1"
    assert THIRTY_DAYS - 10 <= redis_client.ttl(keys.TOTALS) <= THIRTY_DAYS

    counted = counts(redis_client)
    assert counted == {
        "requests": 4,
        "duration": pytest.approx(3.875),
        "http_status:200": 2,
        "http_status:404": 1,
        "errors": 4,
        "errors:http_error": 1,
        "errors:exception": 2,
        "errors:redirect": 1,
        "max_capacity_exceeded": 1,
    }
    assert isinstance(counted["duration"], float)
    assert isinstance(counted["requests"], int)


@pytest.mark.integration
async def test_duration_accumulates_as_float(stats: Stats, redis_client: redis.Redis) -> None:
    for _ in range(10):
        await stats.apply(Stats.record_request_commands(0.1, 200))
    counted = counts(redis_client)
    assert counted["duration"] == pytest.approx(1.0)
    assert counted["requests"] == 10
    await stats.apply(Stats.record_request_commands(1e-05, 500))
    assert (counts(redis_client))["duration"] == pytest.approx(1.00001)


@pytest.mark.integration
async def test_batched_apply_is_one_transaction(stats: Stats, redis_client: redis.Redis) -> None:
    commands = [
        *Stats.record_request_commands(0.5, 201),
        *Stats.record_request_commands(0.5, 201),
        *Stats.record_error_commands("http_error"),
    ]
    await stats.apply(commands)
    await stats.apply([])
    assert counts(redis_client) == {
        "requests": 2,
        "duration": 1.0,
        "http_status:201": 2,
        "errors": 1,
        "errors:http_error": 1,
    }
    assert redis_client.ttl(keys.TOTALS) > THIRTY_DAYS - 10
