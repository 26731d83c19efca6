"""RequestTemplate: URL joining, header and param merging, defaults, as the gem's."""

from __future__ import annotations

from typing import Any

import pytest

from patient_sidekiq.client.templates import RequestTemplate
from patient_sidekiq.errors import InvalidRequestError
from patient_sidekiq.ruby import rubyjson


def test_template_request_is_the_golden_ruby_request(golden: dict[str, Any]) -> None:
    template = RequestTemplate(
        "https://api.example.com/v1/",
        headers={"Authorization": "Bearer t"},
        params={"q": "a b&c"},
        timeout=None,
    )
    request = template.get("items", headers={"X-Id": "1"}, params={"page": 2, "tags": ["x", "y"]})
    assert rubyjson.dumps(request.to_wire()) == golden["request_as_json"]["get_with_params"]["json"]


@pytest.mark.parametrize(
    ("base", "path", "url"),
    [
        ("https://api.example.com/v1/", "users/1", "https://api.example.com/v1/users/1"),
        ("https://api.example.com/v1", "users/1", "https://api.example.com/users/1"),
        ("https://api.example.com/v1/", "/users/1", "https://api.example.com/users/1"),
        ("https://api.example.com", "users", "https://api.example.com/users"),
        ("https://api.example.com/v1/", "https://other.test/x", "https://other.test/x"),
        ("https://api.example.com/v1/a", "?page=2", "https://api.example.com/v1/a?page=2"),
        ("https://api.example.com/v1/a/", "../b", "https://api.example.com/v1/b"),
    ],
)
def test_paths_join_the_base_url_like_uri_join(base: str, path: str, url: str) -> None:
    assert RequestTemplate(base).get(path).url == url


def test_without_a_base_url_the_path_must_be_the_url() -> None:
    assert RequestTemplate().get("https://x.test/a").url == "https://x.test/a"
    with pytest.raises(InvalidRequestError):
        RequestTemplate("/relative")


def test_headers_merge_case_insensitively_and_request_values_win() -> None:
    template = RequestTemplate(
        "https://x.test/", headers={"Authorization": "Bearer a", "Accept": "text/plain"}
    )
    request = template.post("p", headers={"accept": "application/json"}, json={"k": 1})
    assert dict(request.headers) == {
        "authorization": "Bearer a",
        "accept": "application/json",
        "content-type": "application/json; charset=utf-8",
    }
    assert dict(template.get("p").headers) == {
        "authorization": "Bearer a",
        "accept": "text/plain",
    }


def test_params_merge_by_name() -> None:
    template = RequestTemplate("https://x.test/", params={"api_key": "k", "page": 1})
    assert template.get("p", params={"page": 2}).url == "https://x.test/p?api_key=k&page=2"
    assert template.get("p?a=b").url == "https://x.test/p?a=b&api_key=k&page=1"
    assert (
        RequestTemplate("https://x.test/").get("p", params={"a": 1}).url == "https://x.test/p?a=1"
    )


def test_timeout_redirects_and_preprocessors_default_to_the_template() -> None:
    template = RequestTemplate("https://x.test/", max_redirects=2, preprocessors=["sign"])
    default = template.delete("p")
    assert (default.timeout, default.max_redirects, default.preprocessors) == (30, 2, ("sign",))
    assert rubyjson.dumps(default.to_wire()).count('"timeout":30,') == 1
    chosen = template.put("p", timeout=1.5, max_redirects=0, preprocessors=["other"], body="x")
    assert (chosen.timeout, chosen.max_redirects, chosen.preprocessors) == (1.5, 0, ("other",))
    # The gem's ``preprocessors || @preprocessors``: an empty list keeps the template's.
    assert template.patch("p", preprocessors=[]).preprocessors == ("sign",)
    assert RequestTemplate(timeout=None).get("https://x.test/").timeout is None


def test_every_method_builds_its_request() -> None:
    template = RequestTemplate("https://x.test/")
    for method in ("get", "post", "put", "patch", "delete"):
        assert getattr(template, method)("p").http_method == method
    assert template.request("POST", "p", body="b").http_method == "post"
    with pytest.raises(InvalidRequestError):
        template.get("p", body="not for GET")
