"""What one request's execution is configured with, and what a preprocessor gets.

Role: the values the rest of the ``http`` package shares, so that neither the executor
(:mod:`patient_sidekiq.http.http_client`) nor the transports import each other for them:
:class:`HttpSettings`, :class:`OutgoingRequest` (the request a preprocessor may change),
the types of registered secrets and preprocessors, and the TLS context every connection
uses.

Touches no Redis keys.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from patient_sidekiq.wire.request import form_component, merge_query, param_text

__all__ = ["HttpSettings", "OutgoingRequest", "Preprocessor", "SecretValue", "ssl_context_for"]

SecretValue = str | Callable[[str], "str | Awaitable[str]"]
"""A secret: its value, or a callable given the name that returns it (maybe awaitable)."""


@dataclass
class OutgoingRequest:
    """The request as it is about to be sent; preprocessors may change headers and query.

    Secrets are already resolved here: never log ``url``, header values or ``body``.
    """

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None

    def add_query_param(self, name: str, value: str | int | float | bool | None) -> None:
        """Append ``name=value`` (form-encoded like Ruby's ``URI.encode_www_form``)."""
        text = (
            form_component(name)
            if value is None
            else f"{form_component(name)}={form_component(param_text(value))}"
        )
        self.url = merge_query(self.url, text)

    def __repr__(self) -> str:
        return f"OutgoingRequest({self.method.upper()} {self.url.partition('?')[0]})"


Preprocessor = Callable[[OutgoingRequest], "Awaitable[None] | None"]
"""A preprocessor: changes the outgoing request's headers or query in place."""


@dataclass(frozen=True)
class HttpSettings:
    """How requests are executed; built once from configuration and passed in."""

    request_timeout: float = 60.0
    connection_timeout: float | None = None
    max_response_size: int = 1_048_576
    max_redirects: int = 5
    retries: int = 3
    proxy_url: str | None = None
    user_agent: str = "PatientHttp"
    raise_error_responses: bool = False
    protocol: Literal["auto", "http1", "http2"] = "auto"
    verify: bool = True
    ca_bundle: str | None = None
    max_connections: int = 256
    secrets: Mapping[str, SecretValue] = field(default_factory=dict, repr=False)
    """Resolved at each use: a value, or a callable given the name (maybe async)."""
    preprocessors: Mapping[str, Preprocessor] = field(default_factory=dict)
    """Run in a request's order on every hop (maybe async)."""


def ssl_context_for(settings: HttpSettings) -> ssl.SSLContext:
    """Return the TLS context every shard shares: the CA bundle, certifi, or no checks."""
    if not settings.verify:
        return httpx.create_ssl_context(verify=False)
    if settings.ca_bundle is not None:
        return ssl.create_default_context(cafile=settings.ca_bundle)
    return httpx.create_ssl_context(verify=True)
