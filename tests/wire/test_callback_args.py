import datetime
import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given

from patient_sidekiq.errors import NotJsonNativeError
from patient_sidekiq.wire.callback_args import CallbackArgs, validate_callback_args
from tests.support.strategies import json_objects


def test_golden_validation_results(golden: dict[str, Any]) -> None:
    vectors = golden["callback_args"]
    checked = validate_callback_args({"user_id": 1, "nested": {"a": 1}, "list": (1, "x")})
    assert checked == vectors["validate_callback_args(symbol keys, nested)"]
    assert validate_callback_args({1: "x"}) == vectors["non_string_key"]
    assert validate_callback_args(None) == {}
    assert "must be a JSON-native type" in vectors["non_native_value"]["raises"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"t": datetime.datetime(2026, 1, 1)}, r"t must be a JSON-native type .* got datetime"),
        ({"a": [1, {"b": {1, 2}}]}, r"a\[1\]\['b'\] must be a JSON-native type .* got set"),
        ({"a": {1: "x"}}, "a dict key must be a str, got int"),
        ({"f": math.nan}, "f must be a finite float"),
        ({None: 1}, "callback_args key must be a str"),
        ([1], "callback_args must be a dict"),
    ],
)
def test_non_native_values_are_refused_with_their_path(args: Any, message: str) -> None:
    with pytest.raises(NotJsonNativeError, match=message):
        validate_callback_args(args)


def test_callback_args_reading_api() -> None:
    args = CallbackArgs({"user_id": 42})
    assert args["user_id"] == 42
    assert args.fetch("missing", "default") == "default"
    assert "user_id" in args
    assert args.to_wire() == {"user_id": 42}
    with pytest.raises(KeyError, match="Available keys: user_id"):
        args["missing"]


@given(json_objects)
def test_every_json_object_validates_to_itself(value: dict[str, Any]) -> None:
    assert validate_callback_args(value) == value


class _Name(str):
    pass


def test_subclassed_keys_and_non_dict_mappings_take_the_general_path() -> None:
    # A str key and a scalar are copied as they are; anything else is checked in full.
    checked = validate_callback_args(MappingProxyType({_Name("k"): True, 3: [1.5]}))
    assert checked == {"k": True, "3": [1.5]}
    assert [type(key) for key in checked] == [str, str]
