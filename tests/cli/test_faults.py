"""Hostile jobs against a real ``patient-sidekiq run`` (issue 13, item 5).

A corpus of jobs nobody should write (text that is not JSON, not an object, infinity, lone
surrogates, bytes that are not UTF-8, nesting past Ruby's limit, wrong args, 10 MB strings,
undecryptable and missing stored payloads, unknown secrets and preprocessors, hostile URLs
and timeouts) is pushed raw beside valid RequestWorker jobs into ONE worker subprocess.
Asserted: the worker stays up; every valid request completes (its CallbackWorker job
appears); every job that cannot run is in ``retry`` or ``dead`` with an ``error_class``
(a Ruby class name) and an ``error_message``; and no job is lost or duplicated: every job
pushed ends as exactly one callback job, retry entry or dead entry.

A hostile job whose request can be executed ends like the gem ends it: a hostile URL that
the HTTP client refuses is a RequestError delivered to the callback (``on_error``), so those
cases count as answered, not filed. ``FILED`` marks the cases that must be in retry/dead.

Besides the fixed cases, hypothesis draws a bounded, derandomized set of generated hostile
jobs (a few dozen), pushed into the same running worker in rounds.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from patient_sidekiq import keys
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.wire.encryption import MessageEncryptor, is_envelope
from tests.cli.test_cli_run import Api, Proc, api, wait_for, worker
from tests.support.strategies import json_values

pytestmark = [pytest.mark.integration, pytest.mark.faults]

__all__ = ["api"]  # the fixture, imported for the tests below

KEY = "fault-test-key"
ENCRYPTOR = MessageEncryptor(KEY)
WORKER = "PatientHttp::Sidekiq::RequestWorker"
QUEUE = "patient_http"
CALLBACK_QUEUE = "default"  # Ruby callbacks: the worker pushes, nobody here polls it
FLAGS = ["--encryption-key", KEY, "--payload-store", "redis=redis", "-c", "8"]
BIG = 10 * 1024 * 1024
RUBY_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*(::[A-Z][A-Za-z0-9_]*)*")
# Python-only exception names (Ruby has TypeError, KeyError, ArgumentError … too).
PYTHON_ONLY = {
    "ValueError",
    "UnicodeError",
    "UnicodeEncodeError",
    "UnicodeDecodeError",
    "RecursionError",
    "AttributeError",
    "OverflowError",
    "AssertionError",
    "LookupError",
    "OSError",
}


def request_data(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "http_method": "get",
        "url": url,
        "headers": {},
        "body": None,
        "timeout": None,
        "max_redirects": None,
        **extra,
    }


_request_ids = itertools.count()


def request_job(data: Any, jid: str, *, callback_args: Any = None, args: Any = None) -> bytes:
    request_id = f"{jid[:4]}-{next(_request_ids)}"  # unique unless a case wants otherwise
    job = Job.new(
        WORKER,
        args
        if args is not None
        else [data, "MyApp::DoneCallback", False, callback_args, request_id],
        queue=QUEUE,
        jid=jid,
    )
    return job.raw.encode()


def splice(text: str, old: str, new: str) -> bytes:
    """Replace ``old`` by ``new`` in job text and return the bytes (``new`` may hold
    surrogate-escaped bytes, which are written as the raw bytes)."""
    assert old in text
    return text.replace(old, new).encode("utf-8", "surrogateescape")


def fixed_corpus(api: Api, redis_client: redis.Redis) -> tuple[list[bytes], set[int]]:
    """The fixed hostile jobs and the indexes of those that must be filed (retry/dead)."""
    url = api.url("/hostile")
    jobs: list[bytes] = []
    filed: set[int] = set()

    def add(raw: bytes | str, *, must_file: bool = True) -> None:
        if must_file:
            filed.add(len(jobs))
        jobs.append(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape"))

    unknown = (
        '{"class":"Nope::Job","args":[],"jid":"0123456789abcdef01234567","retry":true,'
        '"queue":"patient_http","x":1}'
    )
    # The content classes of the issue, with a class nobody handles…
    add(splice(unknown, '"x":1', '"x":1e400'))
    add(splice(unknown, '"x":1', '"x":"\\ud800"'))
    add(splice(unknown, '"x":1', '"x":"\udcff"'))  # the byte 0xff
    add(splice(unknown, '"x":1', '"x":' + "[" * 1000 + "]" * 1000))
    # … and as args that fail validation or cannot be written back.
    good = request_job(request_data(url), "h" * 24).decode()
    add(splice(good, '"timeout":null', '"timeout":1e400'))
    add(splice(good, '"url":"', '"url":"\\ud800'))
    add(splice(good, '"headers":{}', '"headers":{"x":"\udcff"}'))
    add(splice(good, '"headers":{}', '"headers":' + "[" * 1000 + "]" * 1000))
    add(
        request_job(request_data(url), "i" * 24, callback_args={"a": "X"})
        .decode()
        .replace('"a":"X"', '"a":"\\ud800"')
    )
    # Not JSON, not an object, no class, bad args.
    for text in [
        "{not json",
        "",
        "   ",
        "\x00",
        '{"class":',
        "\udcff\udcfe",
        "[]",
        "1",
        '"str"',
        "null",
        "true",
        '{"args":[]}',
        '{"class":5,"args":[]}',
        '{"class":"","args":[]}',
        f'{{"class":"{WORKER}"}}',
        f'{{"class":"{WORKER}","args":{{}}}}',
    ]:
        add(text)
    # Wrong arg counts and types.
    data = request_data(url)
    for args in [
        [],
        [data],
        [data, "Cb", False, None, "r", "p", 7],
        [data, 42, False, None, "r"],
        [data, "Cb", "yes", None, "r"],
        [data, "Cb", False, [1], "r"],
        [data, "Cb", False, None, 7],
        ["GET /", "Cb", False, None, "r"],
        [None, "Cb", False, None, "r"],
    ]:
        add(request_job(None, "j" * 24, args=args))
    # 10 MB strings: as a class name, as invalid JSON, as an arg that fails validation.
    add('{"class":"' + "A" * BIG + '","args":[]}')
    add('{"class":"' + "A" * BIG)
    add(request_job(None, "k" * 24, args=[data, "C" * BIG, "yes", None, "r"]))
    # A valid request carrying 10 MB of callback_args: answered, its result in the store.
    add(request_job(data, "w" * 24, callback_args={"big": "B" * BIG}), must_file=False)
    # Payloads: undecryptable, tampered, missing from the store, an unknown store.
    add(request_job(MessageEncryptor("another-key").encrypt(data), "l" * 24))
    envelope = ENCRYPTOR.encrypt(data)
    value = base64.b64decode(envelope["value"]).decode()
    tampered = ("A" if value[0] != "A" else "B") + value[1:]
    add(request_job({**envelope, "value": base64.b64encode(tampered.encode()).decode()}, "m" * 24))
    missing = {"$ref": {"store": "redis", "key": "0e9c3a8e-0000-4000-8000-000000000000"}}
    add(request_job(missing, "n" * 24))
    add(request_job({"$ref": {"store": "s3", "key": "k"}}, "o" * 24))
    garbage = keys.payload_key("6f0c2d1e-0000-4000-8000-000000000000")
    redis_client.set(garbage, '{"http_method": "get", "url": ')
    add(
        request_job(
            {"$ref": {"store": "redis", "key": "6f0c2d1e-0000-4000-8000-000000000000"}}, "p" * 24
        )
    )
    # Unknown secrets and preprocessors: the gem fails the job (retried).
    add(request_job(request_data(url, headers={"Authorization": {"$secret": "NOPE"}}), "q" * 24))
    add(request_job(request_data(url, preprocessors=["nope"]), "r" * 24))
    # Hostile URLs and timeouts: refused before the request (filed) or by the HTTP client
    # (an error result for the callback, as the gem delivers it).
    for hostile_url in [
        "",
        "not a url",
        "ftp://127.0.0.1/",
        "http://[::1",
        "javascript:x",
        api.url("/x") + "\r\nX-Injected: 1",
        "http://127.0.0.1:0/",
        "http://" + "a" * 70_000 + "/",
        5,
        None,
        ["x"],
    ]:
        add(request_job(request_data(url) | {"url": hostile_url}, "s" * 24), must_file=False)
    for timeout in [-1, 0, "5", True, 1e-300, 1e308, [], {}]:
        add(request_job(request_data(url, timeout=timeout), "t" * 24), must_file=False)
    # Two jobs with one request id: the in-flight keys hold one task per id and process,
    # so the second is retried (it used to overwrite the first's record and be dropped).
    twin = [data, "MyApp::DoneCallback", False, None, "twin-request"]
    add(request_job(None, "u" * 24, args=twin), must_file=False)
    add(request_job(None, "v" * 24, args=twin), must_file=False)
    return jobs, filed


def valid_jobs(api: Api, prefix: str, count: int) -> dict[str, bytes]:
    """Valid RequestWorker jobs by request id (the callback data carries it back)."""
    return {
        f"{prefix}-{n}": request_job(
            request_data(api.url(f"/valid/{prefix}/{n}")),
            f"{n:024x}",
            callback_args={"n": n},
            args=[
                request_data(api.url(f"/valid/{prefix}/{n}")),
                "MyApp::DoneCallback",
                False,
                {"n": n},
                f"{prefix}-{n}",
            ],
        )
        for n in range(count)
    }


def answered_ids(redis_client: redis.Redis) -> list[str]:
    """The request ids of the CallbackWorker jobs pushed so far (decrypted)."""
    ids = []
    for raw in redis_client.lrange(keys.queue(CALLBACK_QUEUE), 0, -1):
        job = json.loads(raw)
        assert job["class"] == "PatientHttp::Sidekiq::CallbackWorker"
        data = job["args"][0]
        if is_envelope(data):
            data = ENCRYPTOR.decrypt(data)
        if "$ref" in data:  # a large result in the store
            stored = redis_client.get(keys.payload_key(data["$ref"]["key"]))
            assert stored is not None
            data = json.loads(stored)
            if is_envelope(data):
                data = ENCRYPTOR.decrypt(data)
        ids.append(str(data.get("request_id")))
    return ids


def filed_entries(redis_client: redis.Redis) -> list[dict[str, Any]]:
    """Every retry and dead entry, parsed (bytes that are not UTF-8 surrogate-escaped)."""
    entries = []
    for name in (keys.RETRY, keys.DEAD):
        for raw in redis_client.zrange(name, 0, -1):
            entry = json.loads(raw.decode("utf-8", "surrogateescape"))
            assert isinstance(entry, dict), raw[:200]
            entries.append(entry)
    return entries


def ended(redis_client: redis.Redis) -> int:
    return (
        redis_client.llen(keys.queue(CALLBACK_QUEUE))
        + redis_client.zcard(keys.RETRY)
        + redis_client.zcard(keys.DEAD)
    )


def state(redis_client: redis.Redis) -> dict[str, int]:
    return {
        "queued": redis_client.llen(keys.queue(QUEUE)),
        "in flight": redis_client.hlen(keys.INFLIGHT_JOBS),
        "in progress": sum(
            redis_client.llen(k) for k in redis_client.scan_iter(keys.inprogress("*", "*"))
        ),
        "callbacks": redis_client.llen(keys.queue(CALLBACK_QUEUE)),
        "retry": redis_client.zcard(keys.RETRY),
        "dead": redis_client.zcard(keys.DEAD),
    }


def settle(redis_client: redis.Redis, expected: int, proc: Proc, seconds: float = 60) -> None:
    """Wait until nothing is pending and exactly ``expected`` jobs have ended."""
    deadline = time.monotonic() + seconds
    while True:
        now = state(redis_client)
        pending = now["queued"] + now["in flight"] + now["in progress"]
        if pending == 0 and ended(redis_client) == expected:
            return
        assert proc.process.poll() is None, f"the worker exited: {now}{proc.tail()[-5000:]}"
        if time.monotonic() > deadline:
            stuck = [
                raw[:300]
                for k in redis_client.scan_iter(keys.inprogress("*", "*"))
                for raw in redis_client.lrange(k, 0, -1)
            ]
            raise AssertionError(f"not settled ({expected} expected): {now} {stuck}")
        time.sleep(0.1)


def assert_filed_well(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        error_class, message = entry.get("error_class"), entry.get("error_message")
        assert isinstance(error_class, str), entry
        assert RUBY_NAME.fullmatch(error_class), entry
        assert error_class not in PYTHON_ONLY, entry
        assert isinstance(message, str), entry
        assert message, entry


@pytest.fixture
def running(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Proc]:
    with worker(redis_url, tmp_path, *FLAGS) as proc:
        wait_for(lambda: redis_client.scard("processes"), "the worker to join", proc)
        yield proc
        assert proc.process.poll() is None, f"the worker exited{proc.tail()}"


def test_a_hostile_corpus_never_stops_the_worker_and_every_job_ends_once(
    running: Proc, api: Api, redis_client: redis.Redis
) -> None:
    hostile, must_file = fixed_corpus(api, redis_client)
    valid = valid_jobs(api, "fixed", 10)
    # Interleaved, so valid jobs run between (and after) hostile ones.
    mixed = list(hostile)
    for n, raw in enumerate(valid.values()):
        mixed.insert(n * 7, raw)
    pushed = len(hostile) + len(valid)
    assert len(mixed) == pushed
    for raw in mixed:
        redis_client.lpush(keys.queue(QUEUE), raw)
    settle(redis_client, pushed, running)
    assert running.process.poll() is None, running.tail()
    answered = answered_ids(redis_client)
    assert set(valid) <= set(answered)
    assert any(rid.startswith("wwww-") for rid in answered)  # the 10 MB callback_args
    entries = filed_entries(redis_client)
    assert_filed_well(entries)
    # Every job that had to be filed is (the others may have been answered instead).
    assert len(entries) >= len(must_file)
    # Text kept: every wrapped entry holds its original text.
    originals = {
        e["patient_sidekiq_raw"]
        if "patient_sidekiq_raw" in e
        else base64.b64decode(e["patient_sidekiq_raw_base64"])
        for e in entries
        if e.get("class") == "PatientSidekiq::InvalidJob"
    }
    assert "{not json" in originals
    assert b"\xff\xfe" in originals
    # Still working after all that.
    late = valid_jobs(api, "late", 2)
    for raw in late.values():
        redis_client.lpush(keys.queue(QUEUE), raw)
    settle(redis_client, pushed + 2, running)
    assert set(late) <= set(answered_ids(redis_client))


# --- generated ---

VALID_TEXT = (
    '{"retry":true,"queue":"patient_http","args":[{"http_method":"get","url":"URL",'
    '"headers":{},"body":null,"timeout":null,"max_redirects":null},"MyApp::DoneCallback",'
    'false,null,"RID"],"class":"PatientHttp::Sidekiq::RequestWorker",'
    '"jid":"0123456789abcdef01234567"}'
)


@st.composite
def hostile_jobs(draw: st.DrawFn, url: str) -> bytes:
    """A hostile job: random args, a mutated valid text, or random bytes."""
    kind = draw(st.sampled_from(["args", "mutate", "bytes", "field"]))
    text = VALID_TEXT.replace("URL", url).replace("RID", "gen")
    if kind == "args":
        args = draw(st.lists(json_values, max_size=7))
        return Job.new(WORKER, args, queue=QUEUE).raw.encode()
    if kind == "field":
        field = draw(st.sampled_from(["url", "http_method", "headers", "timeout", "body"]))
        value = draw(json_values)
        data = json.loads(text)
        data["args"][0][field] = value
        return json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")
    raw = text.encode()
    if kind == "mutate":
        cut = draw(st.integers(0, len(raw)))
        insert = draw(st.binary(max_size=8))
        return raw[:cut] + insert + raw[cut + draw(st.integers(0, 8)) :]
    return draw(st.binary(max_size=64))


def test_generated_hostile_jobs_never_stop_the_worker(
    running: Proc, api: Api, redis_client: redis.Redis
) -> None:
    counts = {"pushed": 0, "round": 0}

    @settings(
        max_examples=4,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(hostile_jobs(api.url("/generated")), min_size=8, max_size=12))
    def one_round(corpus: list[bytes]) -> None:
        counts["round"] += 1
        valid = valid_jobs(api, f"gen{counts['round']}", 2)
        for raw in [*corpus, *valid.values()]:
            redis_client.lpush(keys.queue(QUEUE), raw)
        counts["pushed"] += len(corpus) + len(valid)
        settle(redis_client, counts["pushed"], running)
        assert running.process.poll() is None, running.tail()
        assert set(valid) <= set(answered_ids(redis_client))
        assert_filed_well(filed_entries(redis_client))

    started = time.monotonic()
    one_round()
    assert counts["round"] >= 2
    assert time.monotonic() - started < 240
