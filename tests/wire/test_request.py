import base64
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patient_sidekiq.errors import InvalidRequestError, WireFormatError
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.wire.headers import SecretRef
from patient_sidekiq.wire.request import Request

URL = "https://api.example.com/v1/items"


def gzip_mtime(vector: dict[str, Any]) -> Callable[[], float]:
    """The clock Ruby had when it gzipped this vector's body (read from the gzip header)."""
    body = vector["as_json"]["body"]
    if body is None or body["encoding"] != "gzipped":
        return lambda: 0.0
    mtime = struct.unpack("<I", base64.b64decode(body["value"])[4:8])[0]
    return lambda: float(mtime)


# The Python arguments that build each golden request, as a Ruby app would pass them.
BUILD_ARGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "get_with_params": (
        "get",
        URL,
        {
            "params": {"q": "a b&c", "page": 2, "tags": ["x", "y"]},
            "headers": {"Authorization": "Bearer t", "X-Id": "1"},
        },
    ),
    "get_url_with_query_plus_params": ("get", f"{URL}?a=1", {"params": {"b": 2}}),
    "get_string_method_timeout": ("GET", URL, {"timeout": 7.5, "max_redirects": 0}),
    "post_json": (
        "post",
        URL,
        {"json": {"name": "wörld", "n": 1, "f": 1.5, "nil": None, "arr": [1, "two"]}},
    ),
    "post_json_with_explicit_content_type": (
        "post",
        URL,
        {"json": {"a": 1}, "headers": {"Content-Type": "application/vnd.api+json"}},
    ),
    "post_text_body_no_content_type": ("post", URL, {"body": "plain body"}),
    "post_form_body": (
        "post",
        URL,
        {"body": "a=1&b=2", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ),
    "post_binary_body": (
        "post",
        URL,
        {
            "body": bytes(range(16)) + b"\xff\xfe",
            "headers": {"Content-Type": "application/octet-stream"},
        },
    ),
    "put_text_body_gt_4096_gzipped": (
        "put",
        URL,
        {
            "body": "The quick brown fox. " * 250,
            "headers": {"Content-Type": "text/plain; charset=utf-8"},
        },
    ),
    "post_text_body_exactly_4096": (
        "post",
        URL,
        {"body": "a" * 4096, "headers": {"Content-Type": "text/plain"}},
    ),
    "post_text_body_4095": (
        "post",
        URL,
        {"body": "a" * 4095, "headers": {"Content-Type": "text/plain"}},
    ),
    "post_latin1_charset_body": (
        "post",
        URL,
        {
            "body": "café crème".encode("latin-1"),
            "headers": {"Content-Type": "text/plain; charset=iso-8859-1"},
        },
    ),
    "post_shift_jis_body": (
        "post",
        URL,
        {
            "body": "日本".encode("shift_jis"),
            "headers": {"Content-Type": "text/plain; charset=Shift_JIS"},
        },
    ),
    "post_unknown_charset_ascii": (
        "post",
        URL,
        {"body": "hello", "headers": {"Content-Type": "text/plain; charset=x-bogus"}},
    ),
    "patch_xml": (
        "patch",
        URL,
        {"body": "<a>ü</a>", "headers": {"Content-Type": "application/xml"}},
    ),
    "delete_plain": ("delete", URL, {}),
    "secret_header_and_param": (
        "get",
        URL,
        {
            "headers": {"Authorization": SecretRef("api_token")},
            "params": {"plain": 1, "key": SecretRef("api_key")},
        },
    ),
    "preprocessors": ("post", URL, {"json": {"a": 1}, "preprocessors": ["sign", "audit"]}),
    "empty_string_body_becomes_nil": ("post", URL, {"body": ""}),
}


def json_vectors(golden: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in golden["request_as_json"].items() if "json" in v}


def test_every_serialisable_golden_request_has_build_arguments(golden: dict[str, Any]) -> None:
    assert set(json_vectors(golden)) == set(BUILD_ARGS)


@pytest.mark.parametrize("name", sorted(BUILD_ARGS))
def test_loading_and_dumping_gives_rubys_text(golden: dict[str, Any], name: str) -> None:
    vector = golden["request_as_json"][name]
    request = Request.from_wire(rubyjson.loads(vector["json"]))
    assert rubyjson.dumps(request.to_wire()) == vector["json"]


@pytest.mark.parametrize("name", sorted(BUILD_ARGS))
def test_building_from_python_arguments_gives_rubys_text(golden: dict[str, Any], name: str) -> None:
    vector = golden["request_as_json"][name]
    method, url, kwargs = BUILD_ARGS[name]
    request = Request.build(method, url, clock=gzip_mtime(vector), **kwargs)
    assert rubyjson.dumps(request.to_wire()) == vector["json"]


@pytest.mark.parametrize("name", sorted(BUILD_ARGS))
def test_loaded_body_bytes_are_what_ruby_read(golden: dict[str, Any], name: str) -> None:
    vector = golden["request_as_json"][name]
    expected = vector["roundtrip"]["body_after_load"]
    request = Request.from_wire(vector["as_json"])
    if expected is None:
        assert request.body is None
    elif vector["roundtrip"]["json_identical_after_load"]:
        assert request.body is not None
        assert request.body.raw.hex().startswith(expected["hex"])
        assert len(request.body.raw) == expected["bytesize"]


def test_a_latin1_body_reads_back_correctly_where_ruby_shows_mojibake(
    golden: dict[str, Any],
) -> None:
    vector = golden["request_as_json"]["post_latin1_charset_body"]
    request = Request.from_wire(vector["as_json"])
    assert request.body is not None
    assert request.body.text == "café crème"
    assert vector["roundtrip"]["as_json_after_load"]["body"]["value"] == "cafÃ© crÃ¨me"


def test_a_str_body_is_sent_in_the_declared_charset() -> None:
    latin = Request.build(
        "post", URL, body="café crème", headers={"content-type": "text/plain; charset=iso-8859-1"}
    )
    assert latin.body is not None
    assert latin.body.to_wire() == {"encoding": "text", "value": "café crème", "charset": "UTF-8"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"caf\xe9", "text/plain; charset=x-bogus"), (b"bad \xff", "text/plain; charset=utf-8")],
)
def test_text_ruby_cannot_generate_is_stored_as_binary(body: bytes, content_type: str) -> None:
    # Ruby raises JSON::GeneratorError for these (golden post_*_high_bytes / invalid_bytes).
    request = Request.build("post", URL, body=body, headers={"content-type": content_type})
    assert request.body is not None
    assert request.body.encoding == "binary"
    assert request.body.raw == body


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("get_with_body", "body is not allowed for GET requests"),
        ("json_and_body", "Cannot provide both body and json"),
        ("bad_method", "method must be one of"),
        ("non_string_body", "body must be str or bytes"),
    ],
)
def test_invalid_requests_are_refused_like_ruby(
    golden: dict[str, Any], name: str, message: str
) -> None:
    assert "ArgumentError" in golden["request_errors"][name]["raises"]
    calls: dict[str, Callable[[], Request]] = {
        "get_with_body": lambda: Request.build("get", URL, body="x"),
        "json_and_body": lambda: Request.build("post", URL, body="x", json={"a": 1}),
        "bad_method": lambda: Request.build("head", URL),
        "non_string_body": lambda: Request.build("post", URL, body=1),  # type: ignore[arg-type]
    }
    with pytest.raises(InvalidRequestError, match=message):
        calls[name]()


def test_form_encoding_follows_ruby_unreserved_set() -> None:
    # Ruby 3.1: URI.encode_www_form("a" => "~*é ", "n" => nil, "f" => 1e16, "t" => true,
    #                               "l" => [1, nil, "x"])
    params = {"a": "~*é ", "n": None, "f": 1e16, "t": True, "l": [1, None, "x"]}
    request = Request.build("get", "https://x.test/p?z=0#frag", params=params)
    assert request.url == "https://x.test/p?z=0&a=%7E*%C3%A9+&n&f=1.0e%2B16&t=true&l=1&&l=x#frag"


@pytest.mark.parametrize(
    "wire",
    [
        None,
        [],
        {"http_method": "head", "url": URL},
        {"http_method": "get", "url": ""},
        {
            "http_method": "get",
            "url": URL,
            "body": {"encoding": "text", "value": "x", "charset": "UTF-8"},
        },
        {"http_method": "post", "url": URL, "body": {"encoding": "zip", "value": "x"}},
        {"http_method": "post", "url": URL, "headers": {"a": 1}},
        {"http_method": "post", "url": URL, "headers": {"a": {"$secret": 5}}},
        {"http_method": "post", "url": URL, "timeout": "5"},
        {"http_method": "post", "url": URL, "max_redirects": 1.5},
        {"http_method": "post", "url": URL, "preprocessors": [""]},
        {"http_method": "post", "url": URL, "secret_params": {"k": "plain"}},
    ],
)
def test_malformed_wire_requests_raise_invalid_request(wire: object) -> None:
    with pytest.raises(InvalidRequestError):
        Request.from_wire(wire)


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text()
        | st.lists(st.text(), max_size=3)
        | st.dictionaries(st.text(max_size=3), st.text(), max_size=2),
        max_size=8,
    )
)
def test_arbitrary_json_raises_only_documented_errors(data: dict[str, Any]) -> None:
    try:
        request = Request.from_wire(data)
    except WireFormatError:
        return
    assert Request.from_wire(rubyjson.loads(rubyjson.dumps(request.to_wire()))) == request


@given(
    method=st.sampled_from(["post", "put", "patch"]),
    body=st.binary(max_size=6000) | st.text(max_size=6000),
    content_type=st.sampled_from(
        [
            None,
            "text/plain",
            "text/html; charset=utf-8",
            "application/json",
            "text/plain; charset=latin1",
            "text/plain; charset=iso-8859-1",
            "text/plain; charset=Shift_JIS",
            "image/png",
            "application/xml; charset=us-ascii",
        ]
    ),
)
def test_built_requests_round_trip_their_body(
    method: str, body: bytes | str, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    codec = {"latin1": None, "iso-8859-1": "latin-1", "Shift_JIS": "shift_jis", "us-ascii": "ascii"}
    declared = codec.get((content_type or "").rpartition("=")[2])
    if isinstance(body, str) and declared and not _encodable(body, declared):
        with pytest.raises(InvalidRequestError, match="cannot be encoded in the declared charset"):
            Request.build(method, URL, body=body, headers=headers)
        return
    request = Request.build(method, URL, body=body, headers=headers)
    loaded = Request.from_wire(rubyjson.loads(rubyjson.dumps(request.to_wire())))
    assert loaded == request
    if body in ("", b""):
        assert loaded.body is None
        return
    assert loaded.body is not None
    if isinstance(body, bytes) and loaded.body.encoding == "binary":
        assert loaded.body.raw == body
    if isinstance(body, str) and loaded.body.encoding != "binary":
        assert loaded.body.text == body


def _encodable(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True
