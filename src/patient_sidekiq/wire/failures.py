"""The failures an `on_error` callback receives: `args[0]` of an "error" CallbackWorker job.

They mirror the gem's ``PatientHttp::Error`` subclasses and are told apart on the wire by
their keys (wire spec §4): ``response`` → :class:`HttpError` (:class:`ClientError` for 4xx,
:class:`ServerError` for 5xx), ``redirects`` → a :class:`RedirectError`, anything else →
:class:`RequestError`. :func:`load_failure` does that dispatch; each class's ``to_wire``
writes the gem's keys in the gem's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from patient_sidekiq.errors import InvalidResultError, PatientHttpError
from patient_sidekiq.wire.callback_args import CallbackArgs
from patient_sidekiq.wire.response import Response

__all__ = [
    "ERROR_TYPES",
    "ClientError",
    "HttpError",
    "RecursiveRedirectError",
    "RedirectError",
    "RequestError",
    "ServerError",
    "TooManyRedirectsError",
    "load_failure",
]

ERROR_TYPES: Final = ("timeout", "connection", "ssl", "response_too_large", "unknown")
"""The ``error_type`` values of a :class:`RequestError`, as the gem classifies failures."""


class RequestError(PatientHttpError):
    """The request failed before a response arrived (timeout, connection, TLS, size …).

    ``class_name`` is the exception class that failed it (a Ruby name when Ruby ran the
    request, e.g. ``Errno::ECONNREFUSED``; a Python one when we did).
    """

    error_type: str

    def __init__(
        self,
        *,
        class_name: str,
        message: str,
        backtrace: Sequence[str] | None,
        error_type: str,
        duration: float | None,
        request_id: str | None,
        url: str | None,
        http_method: str | None,
        callback_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.class_name = class_name
        self.message = message
        self.backtrace = list(backtrace) if backtrace is not None else None
        self.error_type = error_type
        self.duration = duration
        self.request_id = request_id
        self.url = url
        self.http_method = http_method
        self.callback_args_data: dict[str, Any] = dict(callback_args or {})

    @property
    def callback_args(self) -> CallbackArgs:
        """The arguments the enqueuer attached for the callback."""
        return CallbackArgs(self.callback_args_data)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> RequestError:
        """Load the gem's RequestError hash."""
        backtrace = data.get("backtrace")
        if backtrace is not None and (
            not isinstance(backtrace, list) or not all(isinstance(x, str) for x in backtrace)
        ):
            raise InvalidResultError("error backtrace must be a list of strings or null")
        return cls(
            class_name=_text(data, "class_name") or "",
            message=_text(data, "message") or "",
            backtrace=backtrace,
            error_type=_text(data, "error_type") or "",
            duration=_number(data, "duration"),
            request_id=_text(data, "request_id"),
            url=_text(data, "url"),
            http_method=_text(data, "http_method"),
            callback_args=_callback_args(data),
        )

    def to_wire(self) -> dict[str, Any]:
        """Return the wire object in the gem's key order."""
        return {
            "class_name": self.class_name,
            "message": self.message,
            "backtrace": self.backtrace,
            "request_id": self.request_id,
            "error_type": self.error_type,
            "duration": self.duration,
            "url": self.url,
            "http_method": self.http_method or "",
            "callback_args": dict(self.callback_args_data),
        }


class HttpError(PatientHttpError):
    """The server answered with a status outside 200-299 and ``raise_error_responses`` was on."""

    ruby_class: ClassVar[str] = "PatientHttp::HttpError"
    error_type: Final = "http_error"

    def __init__(self, response: Response) -> None:
        method = (response.http_method or "").upper()
        super().__init__(f"HTTP {response.status} response from {method} {response.url}")
        self.response = response

    @staticmethod
    def for_response(response: Response) -> HttpError:
        """Return the gem's class for this status: ClientError, ServerError or HttpError."""
        if response.client_error:
            return ClientError(response)
        if response.server_error:
            return ServerError(response)
        return HttpError(response)

    @property
    def message(self) -> str:
        """``HTTP <status> response from <METHOD> <url>``, as the gem words it."""
        return str(self)

    @property
    def status(self) -> int:
        """The response's status code."""
        return self.response.status

    @property
    def url(self) -> str | None:
        """The URL that answered."""
        return self.response.url

    @property
    def http_method(self) -> str | None:
        """The request method."""
        return self.response.http_method

    @property
    def duration(self) -> float | None:
        """Seconds the final hop took."""
        return self.response.duration

    @property
    def request_id(self) -> str | None:
        """The request id the enqueuer chose."""
        return self.response.request_id

    @property
    def callback_args(self) -> CallbackArgs:
        """The arguments the enqueuer attached for the callback."""
        return self.response.callback_args

    def to_wire(self) -> dict[str, Any]:
        """Return ``{"response": …}``."""
        return {"response": self.response.to_wire()}


class ClientError(HttpError):
    """An :class:`HttpError` with a 4xx status."""

    ruby_class: ClassVar[str] = "PatientHttp::ClientError"


class ServerError(HttpError):
    """An :class:`HttpError` with a 5xx status."""

    ruby_class: ClassVar[str] = "PatientHttp::ServerError"


class RedirectError(PatientHttpError):
    """Following redirects failed; ``redirects`` lists the URLs that redirected."""

    ruby_class: ClassVar[str] = "PatientHttp::RedirectError"
    error_type: Final = "redirect"

    def __init__(
        self,
        *,
        url: str | None,
        http_method: str | None,
        duration: float | None,
        request_id: str | None,
        redirects: Sequence[str],
        callback_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.http_method = http_method
        self.duration = duration
        self.request_id = request_id
        self.redirects = list(redirects)
        self.callback_args_data: dict[str, Any] = dict(callback_args or {})
        super().__init__(self._describe())

    def _describe(self) -> str:
        raise NotImplementedError

    @property
    def message(self) -> str:
        """The gem's wording of the failure."""
        return str(self)

    @property
    def callback_args(self) -> CallbackArgs:
        """The arguments the enqueuer attached for the callback."""
        return CallbackArgs(self.callback_args_data)

    @staticmethod
    def from_wire(data: Mapping[str, Any]) -> RedirectError:
        """Load a redirect error; ``error_class`` must name one of the gem's two classes."""
        name = data.get("error_class")
        classes: dict[str, type[RedirectError]] = {
            TooManyRedirectsError.ruby_class: TooManyRedirectsError,
            RecursiveRedirectError.ruby_class: RecursiveRedirectError,
        }
        if not isinstance(name, str) or name not in classes:
            raise InvalidResultError(f"Invalid redirect error class: {name!r}")
        redirects = data.get("redirects") or []
        if not isinstance(redirects, list) or not all(isinstance(u, str) for u in redirects):
            raise InvalidResultError("redirects must be a list of URLs")
        return classes[name](
            url=_text(data, "url"),
            http_method=_text(data, "http_method"),
            duration=_number(data, "duration"),
            request_id=_text(data, "request_id"),
            redirects=redirects,
            callback_args=_callback_args(data),
        )

    def to_wire(self) -> dict[str, Any]:
        """Return the wire object in the gem's key order."""
        return {
            "error_class": self.ruby_class,
            "url": self.url,
            "http_method": self.http_method or "",
            "duration": self.duration,
            "request_id": self.request_id,
            "redirects": list(self.redirects),
            "callback_args": dict(self.callback_args_data),
        }


class TooManyRedirectsError(RedirectError):
    """More redirect hops than the request's (or the processor's) limit."""

    ruby_class: ClassVar[str] = "PatientHttp::TooManyRedirectsError"

    def _describe(self) -> str:
        # The gem names the FIRST redirecting URL here, while `url` is the last one.
        first = self.redirects[0] if self.redirects else self.url
        method = (self.http_method or "").upper()
        return f"Too many redirects ({len(self.redirects)}) while requesting {method} {first}"


class RecursiveRedirectError(RedirectError):
    """A redirect pointed at a URL already visited in the chain."""

    ruby_class: ClassVar[str] = "PatientHttp::RecursiveRedirectError"

    def _describe(self) -> str:
        return f"Recursive redirect detected: {self.url} was already visited in redirect chain"


def load_failure(data: object) -> RequestError | HttpError | RedirectError:
    """Load any error payload, dispatching on its keys like the gem's ``Error.load``."""
    if not isinstance(data, Mapping):
        raise InvalidResultError(f"error must be an object, got {type(data).__name__}")
    if "response" in data:
        return HttpError.for_response(Response.from_wire(data["response"]))
    if "redirects" in data:
        return RedirectError.from_wire(data)
    return RequestError.from_wire(data)


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidResultError(f"error {key} must be a string, got {value!r}")
    return value


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidResultError(f"error {key} must be a number, got {value!r}")
    return value


def _callback_args(data: Mapping[str, Any]) -> dict[str, Any]:
    value = data.get("callback_args") or {}
    if not isinstance(value, Mapping):
        raise InvalidResultError("callback_args must be an object")
    return dict(value)
