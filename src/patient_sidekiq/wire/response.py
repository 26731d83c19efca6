"""The response payload: ``args[0]`` of a ``"response"`` CallbackWorker job (wire spec §4).

Offers the reading API a Ruby callback has (``status``, ``headers``, ``body``, ``json()``,
``success`` …) and writes the gem's JSON text exactly, in the gem's key order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from patient_sidekiq.errors import InvalidResultError, WireFormatError
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.wire.callback_args import CallbackArgs
from patient_sidekiq.wire.headers import Headers
from patient_sidekiq.wire.payload import Payload, encode_body

__all__ = ["Response"]

_JSON_CONTENT_TYPE: Final = re.compile(r"\Aapplication/[^ ]*json\b")


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response as the gem serialises it for the callback."""

    status: int
    headers: Headers[str]
    payload: Payload | None
    duration: float | None
    request_id: str | None
    url: str | None
    http_method: str | None
    callback_args_data: Mapping[str, Any] = field(default_factory=dict)
    redirects: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes | None,
        duration: float,
        request_id: str | None,
        url: str | None,
        http_method: str | None,
        callback_args: Mapping[str, Any] | None = None,
        redirects: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> Response:
        """Build a response from raw bytes, encoding the body as the gem does."""
        response_headers = Headers(headers)
        # Positional, in field order: one response per request, and keywords cost a dict.
        return cls(
            status,
            response_headers,
            encode_body(body, response_headers.get("content-type"), clock=clock),
            duration,
            request_id,
            url,
            http_method,
            dict(callback_args or {}),
            tuple(redirects),
        )

    @classmethod
    def from_wire(cls, data: object) -> Response:
        """Load a response payload; raise InvalidResultError when it cannot be one."""
        if not isinstance(data, Mapping):
            raise InvalidResultError(f"response must be an object, got {type(data).__name__}")
        status = data.get("status")
        if isinstance(status, bool) or not isinstance(status, int):
            raise InvalidResultError(f"response status must be an integer, got {status!r}")
        headers = data.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(value, str) for value in headers.values()
        ):
            raise InvalidResultError("response headers must be an object of strings")
        duration = data.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, int | float | None):
            raise InvalidResultError(f"response duration must be a number, got {duration!r}")
        redirects = data.get("redirects") or []
        if not isinstance(redirects, list) or not all(isinstance(u, str) for u in redirects):
            raise InvalidResultError("response redirects must be a list of URLs")
        callback_args = data.get("callback_args") or {}
        if not isinstance(callback_args, Mapping):
            raise InvalidResultError("response callback_args must be an object")
        try:
            payload = Payload.from_wire(data.get("body"))
        except WireFormatError as exc:
            raise InvalidResultError(f"response body: {exc}") from exc
        return cls(
            status=status,
            headers=Headers(headers),
            payload=payload,
            duration=duration,
            request_id=_optional_str(data, "request_id"),
            url=_optional_str(data, "url"),
            http_method=_optional_str(data, "http_method"),
            callback_args_data=dict(callback_args),
            redirects=tuple(redirects),
        )

    def to_wire(self) -> dict[str, Any]:
        """Return the wire object in the gem's key order."""
        return {
            "status": self.status,
            "headers": self.headers.to_dict(),
            "body": self.payload.to_wire() if self.payload is not None else None,
            "duration": self.duration,
            "request_id": self.request_id,
            "url": self.url,
            "http_method": self.http_method or "",  # Ruby writes nil.to_s
            "callback_args": dict(self.callback_args_data),
            "redirects": list(self.redirects),
        }

    @property
    def callback_args(self) -> CallbackArgs:
        """The arguments the enqueuer attached for the callback."""
        return CallbackArgs(self.callback_args_data)

    @property
    def content(self) -> bytes | None:
        """The body's bytes (text bodies as UTF-8), or None when there was no body."""
        return self.payload.raw if self.payload is not None else None

    @property
    def text(self) -> str | None:
        """The body decoded as text, or None when there was no body."""
        return self.payload.text if self.payload is not None else None

    @property
    def body(self) -> str | bytes | None:
        """The body as the gem hands it over: text for text payloads, bytes otherwise."""
        if self.payload is None:
            return None
        return self.payload.text if self.payload.encoding != "binary" else self.payload.raw

    @property
    def content_type(self) -> str | None:
        """The ``content-type`` header, if any."""
        return self.headers.get("content-type")

    @property
    def is_json(self) -> bool:
        """Whether the content-type is JSON by the gem's rule (``application/*json``)."""
        content_type = (self.content_type or "").lower()
        return bool(_JSON_CONTENT_TYPE.search(content_type)) or content_type == "text/json"

    def json(self) -> Any:
        """Parse the body as JSON; raise InvalidResultError when it is not JSON."""
        if not self.is_json:
            raise InvalidResultError(
                f"Response Content-Type is not application/json (got: {self.content_type!r})"
            )
        return rubyjson.loads(self.content or b"")

    @property
    def success(self) -> bool:
        """Status 200-299."""
        return 200 <= self.status < 300

    @property
    def redirect(self) -> bool:
        """Status 300-399."""
        return 300 <= self.status < 400

    @property
    def client_error(self) -> bool:
        """Status 400-499."""
        return 400 <= self.status < 500

    @property
    def server_error(self) -> bool:
        """Status 500-599."""
        return 500 <= self.status < 600

    @property
    def error(self) -> bool:
        """Status 400-599."""
        return 400 <= self.status < 600


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidResultError(f"response {key} must be a string, got {value!r}")
    return value
