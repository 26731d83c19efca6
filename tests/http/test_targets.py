"""The URL targets of the HTTP/1.1 transport's direct path (no httpx.Request)."""

from __future__ import annotations

from patient_sidekiq.http import targets


def test_direct_target_splits_plain_urls_and_refuses_the_rest() -> None:
    target = targets.direct_target("http://Example.com:8080/a/b?x=1&y=%20")
    assert target == targets.DirectTarget(
        ("http", "example.com", 8080), "example.com:8080", "/a/b?x=1&y=%20"
    )
    default = targets.direct_target("https://api.example.com")
    assert default == targets.DirectTarget(
        ("https", "api.example.com", 443), "api.example.com", "/"
    )
    ipv6 = targets.direct_target("http://[::1]:81/x")
    assert ipv6 is not None
    assert (ipv6.origin, ipv6.host_header) == (("http", "::1", 81), "[::1]:81")
    for url in (
        "http://exämple.com/",  # IDNA: httpx normalises it
        "http://example.com/a b",
        "http://user:pw@example.com/",
        "ftp://example.com/",
        "http://example.com:99999/",
        "/relative",
    ):
        assert targets.direct_target(url) is None, url
