from types import MappingProxyType

import pytest

from patient_sidekiq.errors import WireFormatError
from patient_sidekiq.wire.headers import Headers, SecretRef, is_secret_marker


def test_names_are_case_insensitive_and_stored_lowercase() -> None:
    headers = Headers({"Content-Type": "a", "X-ID": "1"})
    assert list(headers) == ["content-type", "x-id"]
    assert headers["CONTENT-TYPE"] == "a"
    assert "x-Id" in headers
    assert 5 not in headers


def test_later_duplicates_win_and_copies_do_not_share_state() -> None:
    headers = Headers([("A", "1"), ("a", "2")])
    assert dict(headers) == {"a": "2"}
    merged = headers.merged({"B": "3"})
    assert dict(headers) == {"a": "2"}
    assert dict(merged) == {"a": "2", "b": "3"}
    assert dict(merged.without("A")) == {"b": "3"}
    assert merged == Headers({"a": "2", "b": "3"})
    assert hash(merged) == hash(Headers({"a": "2", "b": "3"}))


def test_secret_references() -> None:
    ref = SecretRef("api_token")
    assert ref.to_wire() == {"$secret": "api_token"}
    assert SecretRef.from_wire({"$secret": "api_token"}) == ref
    assert is_secret_marker({"$secret": "x"})
    assert not is_secret_marker("x")
    assert "api_token" in repr(ref)
    with pytest.raises(WireFormatError):
        SecretRef("")
    with pytest.raises(WireFormatError):
        SecretRef.from_wire({"$secret": 1})
    with pytest.raises(WireFormatError):
        Headers({1: "x"})  # type: ignore[dict-item]


def test_a_dict_and_other_mappings_load_alike() -> None:
    pairs = {"Content-Type": "text/plain", "X-A": "1"}
    expected = {"content-type": "text/plain", "x-a": "1"}
    assert Headers(pairs).to_dict() == expected
    assert Headers(MappingProxyType(pairs)).to_dict() == expected
    assert Headers(list(pairs.items())).to_dict() == expected
    assert not is_secret_marker("$secret")
    assert is_secret_marker(MappingProxyType({"$secret": "k"}))
