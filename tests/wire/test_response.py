import base64
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patient_sidekiq.errors import InvalidResultError, WireFormatError
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.wire.response import Response


def build_from_ruby_inputs(vector: dict[str, Any]) -> Response:
    """Build the response from what Ruby started with: headers, raw body bytes, fields."""
    wire = vector["as_json"]
    before = vector["body_before"]
    clock = 0.0
    if wire["body"] is not None and wire["body"]["encoding"] == "gzipped":
        clock = float(struct.unpack("<I", base64.b64decode(wire["body"]["value"])[4:8])[0])
    body: bytes | None = None
    if before is not None:
        # body_before holds only a hex prefix of long bodies; rebuild them from the payload.
        raw = bytes.fromhex(before["hex"])
        if len(raw) != before["bytesize"]:
            loaded = Response.from_wire(wire)
            assert loaded.content is not None
            raw = loaded.content
        body = raw
        if wire["body"]["charset"] == "UTF-8" and "iso-8859-1" in wire["headers"].get(
            "content-type", ""
        ):
            body = raw.decode("utf-8").encode("latin-1")  # Ruby received latin1 bytes
    return Response.build(
        status=wire["status"],
        headers=wire["headers"],
        body=body,
        duration=wire["duration"],
        request_id=wire["request_id"],
        url=wire["url"],
        http_method=wire["http_method"],
        callback_args=wire["callback_args"],
        redirects=wire["redirects"],
        clock=lambda: clock,
    )


def vector_names() -> list[str]:
    return [
        "text",
        "text_no_charset",
        "json",
        "json_problem",
        "binary",
        "no_content_type",
        "image_png",
        "large_text_gzipped",
        "large_json_gzipped",
        "latin1",
        "nil_body_204",
        "with_redirects",
        "nested_callback_args",
    ]


def test_vector_list_is_complete(golden: dict[str, Any]) -> None:
    assert sorted(golden["response_as_json"]) == sorted(vector_names())


@pytest.mark.parametrize("name", vector_names())
def test_loading_and_dumping_gives_rubys_text(golden: dict[str, Any], name: str) -> None:
    vector = golden["response_as_json"][name]
    response = Response.from_wire(rubyjson.loads(vector["json"]))
    assert rubyjson.dumps(response.to_wire()) == vector["json"]


@pytest.mark.parametrize("name", vector_names())
def test_building_from_raw_bytes_gives_rubys_text(golden: dict[str, Any], name: str) -> None:
    vector = golden["response_as_json"][name]
    assert rubyjson.dumps(build_from_ruby_inputs(vector).to_wire()) == vector["json"]


@pytest.mark.parametrize("name", vector_names())
def test_reading_api_agrees_with_ruby(golden: dict[str, Any], name: str) -> None:
    vector = golden["response_as_json"][name]
    response = Response.from_wire(vector["as_json"])
    after = vector["after_Response.load"]
    assert response.is_json is after["json?"]
    assert response.success is after["success?"]
    before = vector["body_before"]
    if before is None:
        assert response.content is None
    else:
        assert response.content is not None
        assert len(response.content) == before["bytesize"]
        assert response.content.hex().startswith(before["hex"])


def test_latin1_reads_correctly_where_ruby_shows_mojibake(golden: dict[str, Any]) -> None:
    vector = golden["response_as_json"]["latin1"]
    response = Response.from_wire(vector["as_json"])
    assert response.text == "café crème"
    ruby_after = bytes.fromhex(vector["after_Response.load"]["body"]["hex"]).decode()
    assert ruby_after == "cafÃ© crÃ¨me"


def test_json_and_status_helpers(golden: dict[str, Any]) -> None:
    ok = Response.from_wire(golden["response_as_json"]["json"]["as_json"])
    assert ok.json() == {"a": 1, "b": [True, None]}
    assert ok.body == '{"a":1,"b":[true,null]}'
    problem = Response.from_wire(golden["response_as_json"]["json_problem"]["as_json"])
    assert problem.json() == {"error": "nope"}
    assert problem.client_error
    assert problem.error
    assert not problem.server_error
    assert isinstance(problem.body, bytes)
    text = Response.from_wire(golden["response_as_json"]["text"]["as_json"])
    assert text.headers["X-Multi"] == "a\nb"
    assert text.callback_args["user_id"] == 42
    with pytest.raises(InvalidResultError, match="not application/json"):
        text.json()
    with pytest.raises(KeyError, match="Available keys: user_id"):
        text.callback_args["missing"]


@pytest.mark.parametrize(
    "wire",
    [
        None,
        "x",
        {"status": "200"},
        {"status": True},
        {"status": 200, "headers": {"a": 1}},
        {"status": 200, "duration": "1"},
        {"status": 200, "redirects": "x"},
        {"status": 200, "callback_args": [1]},
        {"status": 200, "body": {"encoding": "binary", "value": 5}},
        {"status": 200, "url": 5},
    ],
)
def test_malformed_responses_raise_invalid_result(wire: object) -> None:
    with pytest.raises(InvalidResultError):
        Response.from_wire(wire)


@pytest.mark.parametrize("value", ["not base64!", "AAAA"])
def test_undecodable_bodies_raise_on_access(value: str) -> None:
    response = Response.from_wire(
        {"status": 200, "body": {"encoding": "gzipped", "value": value, "charset": "UTF-8"}}
    )
    with pytest.raises(WireFormatError):
        _ = response.content


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "status",
                "headers",
                "body",
                "duration",
                "url",
                "redirects",
                "callback_args",
                "request_id",
                "http_method",
            ]
        ),
        st.none()
        | st.integers()
        | st.text()
        | st.lists(st.text(), max_size=2)
        | st.dictionaries(st.text(max_size=5), st.text() | st.integers(), max_size=3),
    )
)
def test_arbitrary_json_raises_only_documented_errors(data: dict[str, Any]) -> None:
    try:
        response = Response.from_wire(data)
        _ = response.content
    except WireFormatError:
        return
    assert (
        Response.from_wire(rubyjson.loads(rubyjson.dumps(response.to_wire()))).to_wire()
        == response.to_wire()
    )
