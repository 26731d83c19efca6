"""Request templates: shared base URL, headers, query params and timeout for one API.

Role: the gem's ``PatientHttp::RequestTemplate``. A template builds
:class:`~patient_sidekiq.wire.request.Request` objects; enqueue them with a client::

    github = RequestTemplate(
        base_url="https://api.github.com/", headers={"Authorization": "Bearer …"}
    )
    client.execute(github.get("repos/x/y"), callback=RepoCallback)

Rules, as the gem's: a path is resolved against ``base_url`` as an RFC 3986 reference (Ruby's
``URI.join``: ``"users"`` replaces the last segment of the base path unless the base ends
with ``/``, ``"/users"`` replaces the whole path, an absolute URL wins); per-request headers
are merged over the template's (names case-insensitive); per-request params are merged over
the template's by name; ``timeout`` (default 30 s, as the gem) and ``preprocessors`` apply
unless the request gives its own. ``max_redirects`` is an addition of ours, applied the same
way. Touches no Redis keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from patient_sidekiq.errors import InvalidRequestError
from patient_sidekiq.wire.headers import Headers
from patient_sidekiq.wire.request import HeaderValue, Request

__all__ = ["DEFAULT_TEMPLATE_TIMEOUT", "RequestTemplate"]

DEFAULT_TEMPLATE_TIMEOUT = 30
"""The gem's template timeout in seconds (an integer, so the JSON reads ``30`` as Ruby's)."""


class RequestTemplate:
    """Builds requests sharing a base URL, headers, params, timeout and preprocessors."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, HeaderValue] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_TEMPLATE_TIMEOUT,
        max_redirects: int | None = None,
        preprocessors: Iterable[str] | None = None,
    ) -> None:
        if base_url is not None and not urlsplit(base_url).scheme:
            raise InvalidRequestError(f"base_url must be an absolute URL, got {base_url!r}")
        self.base_url = base_url
        self.headers: Headers[HeaderValue] = Headers(headers or {})
        self.params: dict[str, Any] | None = dict(params) if params is not None else None
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.preprocessors: tuple[str, ...] | None = (
            tuple(preprocessors) if preprocessors is not None else None
        )

    def url_for(self, path: str) -> str:
        """Return ``path`` resolved against ``base_url`` (``path`` itself without one)."""
        if not isinstance(path, str):
            raise InvalidRequestError(f"path must be a string, got {type(path).__name__}")
        return urljoin(self.base_url, path) if self.base_url is not None else path

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, HeaderValue] | None = None,
        body: str | bytes | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        max_redirects: int | None = None,
        preprocessors: Iterable[str] | None = None,
    ) -> Request:
        """Build a request from the template and these per-request values."""
        merged_headers = self.headers.merged(headers) if headers else self.headers
        merged_params = {**self.params, **(params or {})} if self.params is not None else params
        # The gem uses ``||``: an empty preprocessor list also falls back to the template's.
        chosen_preprocessors = (list(preprocessors) if preprocessors is not None else []) or (
            self.preprocessors
        )
        return Request.build(
            method,
            self.url_for(path),
            headers=merged_headers,
            body=body,
            json=json,
            params=merged_params,
            timeout=timeout if timeout is not None else self.timeout,
            max_redirects=max_redirects if max_redirects is not None else self.max_redirects,
            preprocessors=chosen_preprocessors,
        )

    def get(self, path: str, **kwargs: Any) -> Request:
        """A GET request (keyword arguments as :meth:`request`)."""
        return self.request("get", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Request:
        """A POST request (keyword arguments as :meth:`request`)."""
        return self.request("post", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Request:
        """A PUT request (keyword arguments as :meth:`request`)."""
        return self.request("put", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Request:
        """A PATCH request (keyword arguments as :meth:`request`)."""
        return self.request("patch", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Request:
        """A DELETE request (keyword arguments as :meth:`request`)."""
        return self.request("delete", path, **kwargs)

    def __repr__(self) -> str:
        return f"RequestTemplate(base_url={self.base_url!r})"
