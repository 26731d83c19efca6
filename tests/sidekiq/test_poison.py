"""poison.py: the dead entry for any fetched text (issue 13), without Redis."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patient_sidekiq.errors import InvalidJobError, NotJsonNativeError
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.poison import (
    INVALID_JOB_CLASS,
    content_error,
    dead_entry,
    dead_entry_commands,
    encode_raw,
    filing_commands,
)
from patient_sidekiq.sidekiq.retry import RetryPolicy

NOW = 1795615729.25
POLICY = RetryPolicy(clock=lambda: NOW)


def entry(raw: str) -> dict[str, object]:
    text = dead_entry(raw, "NameError", "uninitialized constant X", queue="q", policy=POLICY)
    data = json.loads(text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape"))
    assert isinstance(data, dict)
    return data


def test_an_object_that_re_encodes_gets_the_error_fields() -> None:
    data = entry('{"class":"X","args":[1],"jid":"j"}')
    assert data == {
        "class": "X",
        "args": [1],
        "jid": "j",
        "error_class": "NameError",
        "error_message": "uninitialized constant X",
        "failed_at": NOW,
        "retry_count": 0,
        "queue": "q",
    }


@pytest.mark.parametrize(
    "raw",
    [
        '{"class":"X","args":[],"x":1e400}',
        '{"class":"X","args":[],"x":"\\ud800"}',
        '{"class":"X","args":[],"x":"\udcff"} \n',  # the byte 0xff, as the fetch decodes it
        "{ }",
    ],
)
def test_an_object_that_cannot_be_written_keeps_its_bytes_with_the_fields_spliced(raw: str) -> None:
    text = dead_entry(raw, "NameError", "m\ud800", queue="q", policy=POLICY)
    assert text.startswith(raw.rstrip()[:-1].rstrip())
    data = json.loads(text)
    assert (data["error_class"], data["error_message"], data["retry_count"]) == (
        "NameError",
        "m\ufffd",  # the message is scrubbed; only the original part keeps its bytes
        0,
    )


@pytest.mark.parametrize("raw", ["{not json", "", "[1]", "null", '"s"', "[" * 101 + "]" * 101])
def test_anything_else_is_wrapped_with_its_text(raw: str) -> None:
    data = entry(raw)
    assert data["class"] == INVALID_JOB_CLASS
    assert data["patient_sidekiq_raw"] == raw
    assert (data["args"], data["retry"], data["queue"]) == ([], 0, "q")


def test_text_that_is_not_utf8_is_wrapped_as_base64() -> None:
    raw = b"\xff\xfe{".decode("utf-8", "surrogateescape")
    data = entry(raw)
    assert base64.b64decode(str(data["patient_sidekiq_raw_base64"])) == b"\xff\xfe{"


def test_dead_entry_commands_carry_exact_bytes() -> None:
    raw = '{"class":"X","args":[],"x":"\udcff"}'
    [zadd, *_trims] = dead_entry_commands(raw, "NameError", "m", queue="q", policy=POLICY)
    assert zadd[0] == "ZADD"
    assert zadd[-1].startswith(b'{"class":"X","args":[],"x":"\xff"')
    assert encode_raw(raw) == b'{"class":"X","args":[],"x":"\xff"}'


def test_content_errors_have_ruby_names() -> None:
    assert content_error(NotJsonNativeError("x"))[0] == "JSON::GeneratorError"
    assert content_error(RecursionError())[0] == "SystemStackError"
    bad = UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
    assert content_error(bad)[0] == "ArgumentError"


def test_filing_a_job_that_cannot_be_written_goes_to_dead() -> None:
    raw = '{"class":"X","args":[],"retry":true,"x":1e400}'
    job = Job.parse(raw)
    outcome, commands = filing_commands(
        job, ("NameError", "uninitialized constant X", []), raw=raw, queue="q", policy=POLICY
    )
    assert outcome is None
    assert commands[0][0] == "ZADD"
    assert commands[0][1] == "dead"


def test_job_parse_refuses_nesting_deeper_than_ruby() -> None:
    ok = '{"class":"X","args":' + "[" * 99 + "]" * 99 + "}"
    Job.parse(ok)  # 100 levels with the object itself
    with pytest.raises(InvalidJobError, match="too deep") as caught:
        Job.parse('{"class":"X","args":' + "[" * 100 + "]" * 100 + "}")
    assert caught.value.ruby_error_class == "JSON::NestingError"
    # Brackets inside strings do not count.
    Job.parse('{"class":"X","args":["' + "[" * 500 + '"]}')


def test_dumps_turns_recursion_into_not_json_native() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(NotJsonNativeError):
        rubyjson.dumps(deep)


@settings(max_examples=200, derandomize=True, database=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_text_gets_a_dead_entry_that_parses_with_the_error(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    data = json.loads(
        dead_entry(text, "JSON::ParserError", "m", queue="q", policy=POLICY)
        .encode("utf-8", "surrogateescape")
        .decode("utf-8", "surrogateescape")
    )
    assert data["error_class"] == "JSON::ParserError"
    assert data["error_message"] == "m"
