"""Response bodies, statuses, redirects and failures, Ruby-enqueued, end to end.

Ruby (the gem's ``execute``, ``ruby_interop/gem_enqueue.rb``) pushes RequestWorker jobs,
``patient-sidekiq run`` executes them and the gem's CallbackWorker runs
``Interop::Recorder`` on the result in a Ruby Sidekiq; each test
compares what the Ruby callback recorded. Bodies the shared test app cannot serve (random
binary, Shift_JIS, a large multi-byte text) come from a small stdlib HTTP server started
by this module. The worker runs with ``--max-response-size`` so an oversized body fails.

Python stores a latin1 or Shift_JIS body converted to UTF-8 text (charset "UTF-8"), as the
gem does. The real gem's ``Response`` then re-applies the content-type charset to that text
on load (wire spec 2.1 quirk), so a Ruby callback reads the UTF-8 bytes as Shift_JIS or
latin1: mojibake, exactly as for a request the gem ran itself. The stand-in reads the text
in its stored charset and gets it back intact.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.interop.e2e_harness import E2E, e2e_stack

pytestmark = [pytest.mark.interop, pytest.mark.integration]

MAX_RESPONSE_SIZE = 100_000
BINARY = bytes(range(256)) * 8
BIG_TEXT = "héllo wörld ✓ " * 800  # > 4096 bytes of UTF-8, compresses well
SHIFT_JIS_TEXT = "こんにちは、世界"
RECORDER = "Interop::Recorder"

# path -> (content-type, body)
BODIES: dict[str, tuple[str, bytes]] = {
    "/binary": ("image/png", BINARY),
    "/big-text": ("text/plain; charset=utf-8", BIG_TEXT.encode()),
    "/sjis": ("text/plain; charset=Shift_JIS", SHIFT_JIS_TEXT.encode("shift_jis")),
}


class _BodyHandler(BaseHTTPRequestHandler):
    """Serves ``BODIES`` with a content-length."""

    def do_GET(self) -> None:
        if self.path == "/headers":
            received = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(received)))
            self.end_headers()
            self.wfile.write(received)
            return
        content_type, body = BODIES.get(self.path, ("text/plain", b"not found"))
        self.send_response(200 if self.path in BODIES else 404)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@pytest.fixture(scope="module")
def bodies_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BodyHandler)
    thread = threading.Thread(target=server.serve_forever, name="interop-bodies", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def stack() -> Iterator[E2E]:
    with e2e_stack(python_options=["--max-response-size", str(MAX_RESPONSE_SIZE)]) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_records(stack: E2E) -> None:
    stack.reset()


def _run(stack: E2E, *requests: dict[str, Any], hops: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Enqueue from Ruby with the recorder; return the Ruby records in request order.

    ``hops`` gives, per request, the suffix of the task id its result carries: like the gem,
    a redirect error reports the id of the hop that failed (``<request_id>/<n>``).
    """
    enqueued = stack.ruby_enqueue([{"callback": RECORDER, **request} for request in requests])
    suffixes = hops or ("",) * len(enqueued)
    ids = [item["request_id"] + suffix for item, suffix in zip(enqueued, suffixes, strict=True)]
    records = stack.records(ids)
    for record in records.values():
        assert record["runtime"] == "ruby"
    return [records[rid] for rid in ids]


def _seen_by_ruby(stack: E2E, text: str, charset: str) -> str:
    """``text`` (delivered as UTF-8) as the Ruby callback reads it: the real gem re-reads
    the UTF-8 bytes in the content-type ``charset``; the stand-in keeps the text."""
    return text.encode().decode(charset) if stack.side.real else text


def test_bodies_binary_gzipped_text_and_converted_charsets(stack: E2E, bodies_url: str) -> None:
    binary, big, sjis, latin1 = _run(
        stack,
        {"url": bodies_url + "/binary"},
        {"url": bodies_url + "/big-text"},
        {"url": bodies_url + "/sjis"},
        {"url": stack.url("/charset")},
    )

    assert binary["callback"] == "on_complete"
    assert binary["headers"]["content-type"] == "image/png"
    assert base64.b64decode(binary["body_base64"]) == BINARY
    assert binary["delivery"]["body_encoding"] == "binary"

    assert big["status"] == 200
    assert big["body"] == BIG_TEXT
    assert big["delivery"]["body_encoding"] == "gzipped"

    assert sjis["body"] == _seen_by_ruby(stack, SHIFT_JIS_TEXT, "shift_jis")
    assert sjis["headers"]["content-type"] == "text/plain; charset=Shift_JIS"
    assert sjis["delivery"]["body_encoding"] == "text"

    assert latin1["body"] == _seen_by_ruby(stack, "café", "latin-1")
    assert latin1["delivery"]["body_encoding"] == "text"


def test_5xx_completes_or_raises_server_error(stack: E2E) -> None:
    plain, raising = _run(
        stack,
        {"url": stack.url("/status/503"), "raise_error_responses": False},
        {"url": stack.url("/status/503"), "raise_error_responses": True, "callback_args": {"r": 1}},
    )
    assert plain["callback"] == "on_complete"
    assert plain["status"] == 503
    assert plain["success"] is False
    assert plain["body"] == "status 503"

    assert raising["callback"] == "on_error"
    assert raising["class"] == "PatientHttp::ServerError"
    assert raising["error_type"] == "http_error"
    assert raising["callback_args"] == {"r": 1}
    assert raising["response"]["status"] == 503
    assert raising["response"]["body"] == "status 503"


def test_redirects_are_followed_and_listed(stack: E2E, bodies_url: str) -> None:
    cross_host_target = bodies_url + "/sjis"
    chain, cross = _run(
        stack,
        {"url": stack.url("/redirect/2")},
        {"url": stack.url(f"/redirect-to?url={cross_host_target}&status=307")},
    )
    assert chain["callback"] == "on_complete"
    assert chain["status"] == 200
    assert chain["url"] == stack.url("/redirect/0")
    assert chain["redirects"] == [stack.url("/redirect/2"), stack.url("/redirect/1")]
    assert chain["json"]["path"] == "/redirect/0"

    assert cross["url"] == cross_host_target
    assert cross["redirects"] == [stack.url(f"/redirect-to?url={cross_host_target}&status=307")]
    assert cross["body"] == _seen_by_ruby(stack, SHIFT_JIS_TEXT, "shift_jis")


def test_a_cross_origin_redirect_drops_credentials(stack: E2E, bodies_url: str) -> None:
    headers = {"Authorization": "Bearer s3cret", "Cookie": "session=1", "X-Trace": "t-1"}
    other_origin, same_origin = _run(
        stack,
        {"url": stack.url(f"/redirect-to?url={bodies_url}/headers"), "headers": headers},
        {"url": stack.url("/redirect-to?url=/echo"), "headers": headers},
    )
    assert other_origin["url"] == bodies_url + "/headers"
    received = other_origin["json"]
    assert received["x-trace"] == "t-1"
    assert "authorization" not in received
    assert "cookie" not in received

    # Same origin: everything is sent again.
    echoed = dict(same_origin["json"]["headers"])
    assert echoed["authorization"] == "Bearer s3cret"
    assert echoed["cookie"] == "session=1"
    assert echoed["x-trace"] == "t-1"


def test_too_many_redirects_and_a_loop_are_redirect_errors(stack: E2E) -> None:
    too_many, loop = _run(
        stack,
        {"url": stack.url("/redirect/5"), "max_redirects": 2, "callback_args": {"k": "many"}},
        {"url": stack.url("/loop"), "callback_args": {"k": "loop"}},
        hops=("/3", "/2"),
    )
    assert too_many["callback"] == "on_error"
    assert too_many["class"] == "PatientHttp::TooManyRedirectsError"
    assert too_many["error_type"] == "redirect"
    assert too_many["callback_args"] == {"k": "many"}
    if stack.side.real:  # the gem words the message; the wire does not carry it
        assert too_many["message"] == (
            f"Too many redirects (3) while requesting GET {stack.url('/redirect/5')}"
        )
    assert too_many["response"] is None
    # The gem reports the Location header as sent (relative here), not the resolved URL.
    assert too_many["url"] == "/redirect/2"
    assert too_many["redirects"] == [stack.url(f"/redirect/{n}") for n in (5, 4, 3)]

    assert loop["callback"] == "on_error"
    assert loop["class"] == "PatientHttp::RecursiveRedirectError"
    assert loop["error_type"] == "redirect"
    assert loop["callback_args"] == {"k": "loop"}
    assert loop["url"] == stack.url("/loop")
    if stack.side.real:
        assert loop["message"] == (
            f"Recursive redirect detected: {stack.url('/loop')} was already visited in "
            "redirect chain"
        )
    assert loop["redirects"] == [stack.url("/loop"), stack.url("/loop/b")]


def test_timeout_and_oversized_response_are_request_errors(stack: E2E) -> None:
    slow, oversized = _run(
        stack,
        {"url": stack.url("/slow?seconds=5"), "timeout": 0.5},
        {"url": stack.url(f"/big?bytes={MAX_RESPONSE_SIZE * 2}&length=0")},
    )
    assert slow["callback"] == "on_error"
    assert slow["error_type"] == "timeout"
    # What the gem reports: the async reactor's timeout.
    assert slow["class"] == "Async::TimeoutError"
    assert slow["message"] == "execution expired"
    assert slow["url"] == stack.url("/slow?seconds=5")
    assert slow["response"] is None

    assert oversized["callback"] == "on_error"
    assert oversized["error_type"] == "response_too_large"
    assert oversized["class"] == "PatientHttp::ResponseTooLargeError"
    assert oversized["message"] == (
        f"Response body size exceeded maximum allowed size ({MAX_RESPONSE_SIZE} bytes)"
    )
    assert oversized["response"] is None
