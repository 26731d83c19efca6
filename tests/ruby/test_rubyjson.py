import contextlib
import json
import math
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patient_sidekiq.errors import InvalidJsonError, NotJsonNativeError
from patient_sidekiq.ruby import rubyjson
from tests.support.strategies import json_values

# Spellings checked against Ruby 3.1's Float#to_s (what JSON.generate writes).
RUBY_FLOATS = [
    (1e16, "1.0e+16"),
    (1e15, "1.0e+15"),
    (4537997502243646.0, "4.537997502243646e+15"),
    (1223383794756801.2, "1223383794756801.2"),
    (999999999999999.9, "999999999999999.9"),
    (1e-05, "1.0e-05"),
    (1.5e-05, "1.5e-05"),
    (0.0001, "0.0001"),
    (1.0, "1.0"),
    (-0.0, "-0.0"),
    (123456789.12345679, "123456789.12345679"),
    (1e300, "1.0e+300"),
    (5e-324, "5.0e-324"),
    (1795615729.9256558, "1795615729.9256558"),
]


@pytest.mark.parametrize(("value", "expected"), RUBY_FLOATS)
def test_floats_are_spelled_like_ruby(value: float, expected: str) -> None:
    assert rubyjson.ruby_float_repr(value) == expected
    assert rubyjson.dumps([value]) == f"[{expected}]"
    assert rubyjson.dumps(value) == expected  # a bare number too (a timestamp alone)


def test_dumps_matches_ruby_generate_for_strings_and_layout() -> None:
    # Ruby 3.1: JSON.generate(["\u0001\u001f\b\f\n\r\t\"\\/\u007f\u2028 é", {"a" => nil}])
    value = ['\x01\x1f\b\f\n\r\t"\\/\x7f\u2028 é', {"a": None, "b": [True, False, 2**70]}]
    assert rubyjson.dumps(value) == (
        '["\\u0001\\u001f\\b\\f\\n\\r\\t\\"\\\\/\x7f\u2028 é",'
        '{"a":null,"b":[true,false,1180591620717411303424]}]'
    )


def test_exact_path_is_used_when_a_string_merely_looks_like_an_exponent() -> None:
    value = {"s": "1e+5 and 1234567890123456.7", "f": 1e16, "n": [0.5]}
    assert rubyjson.dumps(value) == '{"s":"1e+5 and 1234567890123456.7","f":1.0e+16,"n":[0.5]}'


@given(json_values, st.lists(st.floats(allow_nan=False, allow_infinity=False)))
def test_the_fast_path_never_misses_a_float_ruby_spells_differently(
    value: object, floats: list[float]
) -> None:
    # dumps skips the exact (slow) writer when its scan finds no such float: whatever the
    # values and the strings around them, the result must be the exact writer's.
    for candidate in (value, [value, *floats], {"id": "4f5e-9c1e", "v": floats}, *floats):
        assert rubyjson.dumps(candidate) == "".join(rubyjson._encode_exact(candidate))


def test_uuid_like_text_does_not_hide_a_float() -> None:
    value = {"request_id": "8c3a06e6-f52b-4f5e-9c1e-123456789abc", "duration": 9.5e-05}
    assert rubyjson.dumps(value) == (
        '{"request_id":"8c3a06e6-f52b-4f5e-9c1e-123456789abc","duration":9.5e-05}'
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {1, 2}, b"bytes", object()])
def test_values_ruby_cannot_receive_are_refused(bad: object) -> None:
    with pytest.raises(NotJsonNativeError):
        rubyjson.dumps({"v": bad})


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(NotJsonNativeError, match="not valid Unicode"):
        rubyjson.dumps(["\ud800"])


@given(st.text())
def test_dumps_string_writes_and_refuses_exactly_as_dumps(value: str) -> None:
    try:
        expected = rubyjson.dumps(value)
    except NotJsonNativeError as exc:
        with pytest.raises(NotJsonNativeError, match=re.escape(str(exc))):
            rubyjson.dumps_string(value)
    else:
        assert rubyjson.dumps_string(value) == expected


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "{", "", "\xff", b"\xff\xfe", "1" * 5000])
def test_loads_refuses_what_ruby_refuses(text: str | bytes) -> None:
    with pytest.raises(InvalidJsonError):
        rubyjson.loads(text)


def test_every_golden_json_text_round_trips(golden: dict[str, object]) -> None:
    texts: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict) and node is not golden["versions"]:
            for key, value in node.items():
                if key in ("json", "stored_value", "sample_json") and isinstance(value, str):
                    texts.append(value)
                else:
                    collect(value)

    collect(golden)
    assert len(texts) > 30
    for text in texts:
        assert rubyjson.dumps(rubyjson.loads(text)) == text


@given(json_values)
def test_round_trip_preserves_values_and_types(value: object) -> None:
    text = rubyjson.dumps(value)
    assert rubyjson.loads(text) == value
    assert rubyjson.dumps(rubyjson.loads(text)) == text
    # Python's own parser reads the Ruby spelling identically.
    assert json.loads(text) == value


@given(st.text())
def test_loads_raises_only_documented_errors(text: str) -> None:
    with contextlib.suppress(InvalidJsonError):
        rubyjson.loads(text)


_TRICKY_FLOATS = [1e-05, -9.5e-05, 1e-07, 0.0001, 1e15, 1e16, 1234567890123456.7, 5e-324, -0.0]


@given(json_values, st.lists(st.floats(allow_nan=False, allow_infinity=False)))
def test_dumps_native_writes_exactly_as_dumps(value: object, floats: list[float]) -> None:
    # orjson writes the text when its spelling is provably the json module's; every other
    # text comes from dumps: either way the bytes are dumps' bytes.
    for candidate in (value, [value, *floats], {"id": "4f5e-9c1e", "v": floats}, *floats):
        assert rubyjson.dumps_native(candidate) == rubyjson.dumps(candidate)


@pytest.mark.parametrize(
    "value",
    [
        _TRICKY_FLOATS,
        {"d": 9.5e-05, "s": "0.0000 null"},
        [2**64, -(2**63) - 1, 2**100],
        {1: "int key", None: "null key"},
        [True, False, None, "", "\x00\x1f\x7f\u2028\U0001f600"],
        ("tuple", 1),
    ],
)
def test_dumps_native_matches_dumps_where_orjson_differs(value: object) -> None:
    assert rubyjson.dumps_native(value) == rubyjson.dumps(value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "\ud800", object(), b"bytes"])
def test_dumps_native_refuses_what_dumps_refuses(bad: object) -> None:
    with pytest.raises(NotJsonNativeError):
        rubyjson.dumps_native({"v": [bad]})


class _Text(str):
    pass


def test_dumps_native_leaves_subclasses_to_dumps() -> None:
    assert rubyjson.dumps_native({"v": _Text("x")}) == '{"v":"x"}'


@given(st.floats())
def test_dumps_float_writes_and_refuses_exactly_as_dumps(value: float) -> None:
    try:
        expected = rubyjson.dumps(value)
    except NotJsonNativeError:
        with pytest.raises(NotJsonNativeError):
            rubyjson.dumps_float(value)
    else:
        assert rubyjson.dumps_float(value) == expected


def _typed(value: object) -> object:
    # Equality that tells 1 from 1.0 and True, -0.0 from 0.0, and sees key order.
    if isinstance(value, dict):
        return ("dict", [(key, _typed(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(item) for item in value])
    return (type(value).__name__, repr(value))


def _outcome(read: Callable[[], object]) -> object:
    try:
        return _typed(read())
    except (InvalidJsonError, ValueError, TypeError, RecursionError):
        return "refused"


def _json_module(text: str | bytes) -> object:
    return rubyjson._decoder.decode(text.decode("utf-8") if isinstance(text, bytes) else text)


_NUMBER = st.from_regex(r"\A-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?\Z")
_JSON_TEXT = st.one_of(
    st.text(),
    st.text(alphabet='{}[]",:0123456789.eE+-tfnrulas\\ ud8'),
    _NUMBER,
    st.lists(_NUMBER).map(lambda items: "[" + ",".join(items) + "]"),
    json_values.map(lambda value: json.dumps(value, ensure_ascii=False)),
    json_values.map(json.dumps),
    st.builds(
        lambda key, first, second: f'{{"{key}":{first},"b":0,"{key}":{second}}}',
        st.sampled_from(["a", "b"]),
        _NUMBER,
        _NUMBER,
    ),
)


@given(_JSON_TEXT)
def test_loads_reads_exactly_as_the_json_module(text: str) -> None:
    # orjson reads what it can, the json module the rest: values, types, key order and
    # refusals are the json module's, for text and for bytes.
    assert _outcome(lambda: rubyjson.loads(text)) == _outcome(lambda: _json_module(text))
    data = text.encode("utf-8", "surrogatepass")
    assert _outcome(lambda: rubyjson.loads(data)) == _outcome(lambda: _json_module(data))


@pytest.mark.parametrize(
    "text",
    ["18446744073709551616", "-9223372036854775809", '{"big":[123456789012345678901234567890]}'],
)
def test_loads_keeps_integers_beyond_64_bits(text: str) -> None:
    # orjson alone would read these as floats.
    assert _typed(rubyjson.loads(text)) == _typed(json.loads(text))
