"""The Sidekiq job hash: byte-exact round trips, validation, timestamp dialects."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patient_sidekiq.errors import InvalidJobError, WireFormatError
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import Job, TimestampDialect, new_jid, read_time, stamp
from tests.support.strategies import json_values

ODD = (
    '{"jid":"b0a04c29806cdb2637f2fa7e","args":[1,"\u00e9\u6f22\U0001f600",{"b":1,"a":2.50}],'
    '"zzz":{"nested":[true,null]},"class":"Foo::Bar","created_at":1795615729.9256558,'
    '"queue":"default","retry":3}'
)


def test_unchanged_job_returns_original_text() -> None:
    job = Job.parse(ODD)
    assert job.raw == ODD  # "2.50" would re-serialise as 2.5: the original text wins
    assert Job.parse(ODD.encode()).raw == ODD
    assert job.with_fields() is job
    assert job.without("absent") is job


def test_properties() -> None:
    job = Job.parse(ODD)
    assert job.class_name == "Foo::Bar"
    assert job.args[0] == 1
    assert job.queue == "default"
    assert job.jid == "b0a04c29806cdb2637f2fa7e"
    assert job.retry == 3
    assert job.retry_count is None
    assert job.retry_queue is None
    assert job.created_at == 1795615729.9256558
    assert job["zzz"] == {"nested": [True, None]}
    assert "zzz" in job
    assert job.get("missing", 7) == 7


def test_data_is_read_only() -> None:
    job = Job.parse(ODD)
    with pytest.raises(TypeError):
        job.data["class"] = "X"  # type: ignore[index]
    copy = job.to_dict()
    copy["args"].append(9)
    assert job.raw == ODD
    assert len(job.args) == 3


def test_change_keeps_key_order_and_appends_new_keys() -> None:
    job = Job.parse(ODD)
    changed = job.with_fields(queue="critical", retry_count=0)
    assert list(changed.data) == [*list(job.data), "retry_count"]
    assert changed.raw == rubyjson.dumps({**job.to_dict(), "queue": "critical", "retry_count": 0})
    assert '"queue":"critical","retry":3,"retry_count":0}' in changed.raw
    assert '"zzz":{"nested":[true,null]}' in changed.raw
    assert job.queue == "default"  # the original is untouched


def test_without_removes_keys() -> None:
    job = Job.parse(ODD).without("zzz", "created_at")
    assert "zzz" not in job
    assert "created_at" not in job
    assert job.class_name == "Foo::Bar"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "{",
        '{"class":"A","args":[]} trailing',
        '{"class":"A","args":[NaN]}',
        "[1,2]",
        '"string"',
        "null",
        '{"args":[]}',
        '{"class":"","args":[]}',
        '{"class":5,"args":[]}',
        '{"class":"A"}',
        '{"class":"A","args":{}}',
        '{"class":"A","args":"x"}',
        b'{"class":"A\xff","args":[]}',
    ],
)
def test_parse_errors(raw: str | bytes) -> None:
    with pytest.raises(InvalidJobError):
        Job.parse(raw)
    assert issubclass(InvalidJobError, WireFormatError)


def test_change_cannot_break_class_or_args() -> None:
    job = Job.parse(ODD)
    with pytest.raises(InvalidJobError):
        job.with_fields(args="nope")
    with pytest.raises(InvalidJobError):
        job.without("class")


def test_new_follows_ruby_client_key_order() -> None:
    job = Job.new("Foo", [1, 2], queue="q", retry=5, jid="a" * 24, tags=["t"])
    assert job.raw == '{"retry":5,"queue":"q","args":[1,2],"class":"Foo","jid":"' + "a" * 24 + (
        '","tags":["t"]}'
    )
    fresh = Job.new("Foo", [])
    assert re.fullmatch(r"[0-9a-f]{24}", fresh.jid or "")
    assert fresh.retry is True
    assert fresh.queue == "default"
    with pytest.raises(InvalidJobError):
        Job.new("", [])


def test_new_jid() -> None:
    jids = {new_jid() for _ in range(50)}
    assert len(jids) == 50
    assert all(re.fullmatch(r"[0-9a-f]{24}", jid) for jid in jids)


def _golden_jobs(golden: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry.get("job", entry) for entry in golden["jobs"].values()]


def test_golden_jobs_round_trip(golden: dict[str, Any]) -> None:
    jobs = _golden_jobs(golden)
    assert len(jobs) == len(golden["jobs"]) >= 5
    for data in jobs:
        text = rubyjson.dumps(data)
        job = Job.parse(text)
        assert job.raw == text
        assert job.to_dict() == data
        assert job.with_fields(retry_count=0).without("retry_count").raw == text
        assert re.fullmatch(r"[0-9a-f]{24}", job.jid or "")


def test_stamp_dialects() -> None:
    now = 1795615729.9256558
    seconds = stamp(TimestampDialect.SECONDS, now)
    assert isinstance(seconds, float)
    assert seconds == now
    assert stamp(TimestampDialect.SECONDS, 1700000000) == 1700000000.0
    assert rubyjson.dumps(stamp(TimestampDialect.SECONDS, 1700000000)) == "1700000000.0"
    millis = stamp(TimestampDialect.MILLIS, now)
    assert millis == 1795615729925
    assert type(millis) is int


def test_read_time_by_json_number_type() -> None:
    assert read_time(1700000000.5) == 1700000000.5
    assert read_time(1700000000500) == 1700000000.5
    assert read_time(rubyjson.loads("1700000000.0")) == 1700000000.0
    assert read_time(rubyjson.loads("1700000000000")) == 1700000000.0
    for value in (None, True, False, "1700000000", [1]):
        assert read_time(value) is None
    job = Job.parse('{"class":"A","args":[],"created_at":1.5,"enqueued_at":2500,"failed_at":"x"}')
    assert job.created_at == 1.5
    assert job.enqueued_at == 2.5
    assert job.failed_at is None


extra_keys = st.text().filter(lambda key: key not in {"class", "args"})


@given(
    class_name=st.text(min_size=1),
    args=st.lists(json_values, max_size=4),
    extra=st.dictionaries(extra_keys, json_values, max_size=6),
    class_first=st.booleans(),
)
def test_round_trip_property(
    class_name: str, args: list[Any], extra: dict[str, Any], class_first: bool
) -> None:
    head = {"class": class_name, "args": args} if class_first else {"args": args}
    data = {**head, **extra, "class": class_name}
    try:
        text = rubyjson.dumps(data)
    except WireFormatError:  # lone surrogates: not a job Ruby could write either
        return
    job = Job.parse(text)
    assert job.raw == text
    assert Job.parse(job.raw).to_dict() == job.to_dict()
    changed = job.with_fields(retry_count=1)
    assert list(changed.data)[: len(data)] == list(data)
    assert Job.parse(changed.raw).to_dict() == {**job.to_dict(), "retry_count": 1}
