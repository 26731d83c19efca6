"""Our S3 payload store and the real gem's S3Store on the same bucket, both ways.

The Ruby side is ``PatientHttp::PayloadStore::S3Store`` from the real patient_http 1.3.0
with Debian's aws-sdk-s3, run by ``s3_store_peer.rb`` (one Ruby process for the module,
spoken to one JSON line at a time); the server is moto (tests/support/s3.py). What Ruby
stores we read back as the exact text its ``JSON.generate`` printed; what we store Ruby
fetches as the same Hash; deletes on either side are seen by the other.
"""

from __future__ import annotations

import json
import select
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

from patient_sidekiq.wire.payload_store import new_key
from patient_sidekiq.wire.s3_store import DEFAULT_S3_KEY_PREFIX, S3PayloadStore
from tests.support.oracle import oracle_env, require_oracle
from tests.support.programs import require_binary

if TYPE_CHECKING:  # importing it for real would load the plugin before pytest rewrites it
    from tests.support.s3 import MotoServer

pytestmark = pytest.mark.interop
pytest_plugins = ["tests.support.s3"]

PEER = Path(__file__).resolve().parent / "s3_store_peer.rb"
REPLY_TIMEOUT = 30.0
"""Seconds Ruby has for one reply (it needs a fraction of one; startup is the slow part)."""

# Values whose JSON text Ruby writes its own way (float exponents, unescaped non-ASCII and
# U+2028, "/" left alone), so reading Ruby's text back exactly is a real test.
DOCUMENTS: list[Any] = [
    {"status": 200, "headers": {"b": "1", "a": "2"}, "body": "ok"},
    {"float": 1e20, "small": 1.5e-7, "third": 1 / 3, "neg": -0.0, "int": 2**70},
    {"text": 'é ✓ 日本語 😀 \u2028 </script> \\ " \u0001 \u007f', "empty": {}, "list": []},
    {"nested": [{"a": [None, True, False]}, "x" * 5000]},
]

# The default (nil), a custom prefix, and an empty one (kept as "" by the gem, not defaulted).
EVERY_PREFIX = pytest.mark.parametrize(
    "key_prefix",
    [None, "tenant-a/payloads/", ""],
    ids=["default-prefix", "custom-prefix", "empty-prefix"],
)


class RubyPeer:
    """``s3_store_peer.rb``: the gem's S3Store in one Ruby process, a request and a reply
    line at a time."""

    def __init__(self, endpoint: str, env: dict[str, str], log: Path) -> None:
        root = require_oracle()
        ruby = require_binary("ruby")
        self._log_path = log
        self._log = log.open("wb")  # stderr to a file: a full pipe would stall Ruby
        self._process = subprocess.Popen(
            [ruby, str(PEER), endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=oracle_env(root, env),
            text=True,
            encoding="utf-8",
        )
        ready = self._read()
        assert ready["ready"] is True
        # The real gem from the oracle, not some other patient_http on Ruby's load path.
        assert ready["patient_http"] == "1.3.0"
        assert Path(ready["source"]).resolve().is_relative_to(root)
        self.aws_sdk_s3: str = ready["aws_sdk_s3"]

    def _read(self) -> Any:
        stdout: IO[str] | None = self._process.stdout
        assert stdout is not None
        # One reply per request and none unasked, so nothing waits in Python's buffer while
        # select watches the pipe.
        readable, _, _ = select.select([stdout], [], [], REPLY_TIMEOUT)
        line = stdout.readline() if readable else ""
        if not line:
            self.close()
            pytest.fail(f"the Ruby S3Store peer did not answer:\n{self._log_path.read_text()}")
        return json.loads(line)

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        answer: dict[str, Any] = self._read()
        assert "error" not in answer, answer
        return answer

    def close(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()  # end of input: the peer's loop ends, Ruby exits
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._log.close()


@dataclass(frozen=True)
class RubyStore:
    """The gem's ``S3Store.new(bucket: <bucket>, key_prefix: <key_prefix>)`` in the peer."""

    peer: RubyPeer
    bucket: str
    key_prefix: str | None

    def _call(self, op: str, key: str = "", data: Any = None) -> dict[str, Any]:
        return self.peer.call(
            {
                "op": op,
                "bucket": self.bucket,
                "key_prefix": self.key_prefix,
                "key": key,
                "data": data,
            }
        )

    def store(self, key: str, data: Any) -> str:
        """Store ``data`` with the gem; return the JSON text Ruby's ``JSON.generate`` made."""
        answer = self._call("store", key, data)
        assert answer["key"] == key  # the gem's store returns the key
        text: str = answer["json"]
        return text

    def fetch(self, key: str) -> Any:
        return self._call("fetch", key)["data"]

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key)["exists"])

    def delete(self, key: str) -> None:
        assert self._call("delete", key)["deleted"] is True

    def actual_key_prefix(self) -> str:
        prefix: str = self._call("key_prefix")["key_prefix"]
        return prefix


@pytest.fixture(scope="module")
def ruby_peer(
    s3_server: MotoServer, s3_process_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RubyPeer]:
    """One Ruby process for the module; its environment has only dummy AWS settings."""
    log = tmp_path_factory.mktemp("ruby-s3-peer") / "stderr.log"
    peer = RubyPeer(s3_server.url, s3_process_env, log)
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def key_prefix() -> str | None:
    """The gem's default prefix, unless a test is parametrized with ``EVERY_PREFIX``."""
    return None


@pytest.fixture
def ruby(ruby_peer: RubyPeer, s3_bucket: str, key_prefix: str | None) -> RubyStore:
    """The gem's store on this test's bucket, with this test's prefix."""
    return RubyStore(ruby_peer, s3_bucket, key_prefix)


@pytest.fixture
def store(s3_endpoint: str, s3_bucket: str, key_prefix: str | None) -> Iterator[S3PayloadStore]:
    """Ours, on the same bucket with the same prefix."""
    ours = S3PayloadStore(s3_bucket, key_prefix=key_prefix, endpoint_url=s3_endpoint)
    try:
        yield ours
    finally:
        ours.close()


@EVERY_PREFIX
def test_both_sides_use_the_same_prefix(ruby: RubyStore, store: S3PayloadStore) -> None:
    assert ruby.actual_key_prefix() == store.key_prefix
    if ruby.key_prefix is None:
        assert store.key_prefix == DEFAULT_S3_KEY_PREFIX


@EVERY_PREFIX
async def test_ruby_stores_python_reads_the_exact_text(
    ruby: RubyStore, store: S3PayloadStore, s3_client: Any, s3_bucket: str
) -> None:
    for document in DOCUMENTS:
        key = new_key()
        ruby_text = ruby.store(key, document)
        assert await store.get(key) == ruby_text
        assert json.loads(ruby_text) == document
        # The object itself, as the gem wrote it: the text in UTF-8, JSON content type.
        response = s3_client.get_object(Bucket=s3_bucket, Key=store.object_key(key))
        with response["Body"] as body:
            assert body.read() == ruby_text.encode("utf-8")
        assert response["ContentType"] == "application/json"
        assert response["Metadata"] == {}


@EVERY_PREFIX
async def test_python_stores_ruby_fetches_the_same_hash(
    ruby: RubyStore, store: S3PayloadStore, s3_client: Any, s3_bucket: str
) -> None:
    for document in DOCUMENTS:
        key = new_key()
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        await store.put(key, text)
        assert ruby.exists(key)
        fetched = ruby.fetch(key)
        assert fetched == document
        assert json.dumps(fetched) == json.dumps(document)  # the same key order too
        response = s3_client.head_object(Bucket=s3_bucket, Key=store.object_key(key))
        assert response["ContentType"] == "application/json"
        assert response["Metadata"] == {}
    # Any JSON text, not only Ruby's formatting: Ruby parses what we put as it stands.
    await store.put("spaced", '{ "a" : [ 1 , 2.50 ] ,\n "b" : "\\u00e9" }')
    assert ruby.fetch("spaced") == {"a": [1, 2.5], "b": "é"}


async def test_deletes_are_seen_by_the_other_side(ruby: RubyStore, store: S3PayloadStore) -> None:
    ours, theirs = new_key(), new_key()
    await store.put(ours, '{"from":"python"}')
    ruby.store(theirs, {"from": "ruby"})
    assert ruby.exists(ours)
    assert await store.get(theirs) == '{"from":"ruby"}'

    await store.delete(ours)
    assert not ruby.exists(ours)
    assert ruby.fetch(ours) is None

    ruby.delete(theirs)
    assert await store.get(theirs) is None

    # Both deletes are idempotent, on either side.
    ruby.delete(ours)
    await store.delete(theirs)


async def test_missing_keys_read_as_nothing_on_both_sides(
    ruby: RubyStore, store: S3PayloadStore
) -> None:
    key = new_key()
    assert ruby.fetch(key) is None
    assert not ruby.exists(key)
    assert await store.get(key) is None
