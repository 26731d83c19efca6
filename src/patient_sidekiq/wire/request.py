"""The request payload: ``args[0]`` of a RequestWorker job once unwrapped (wire spec §2).

:meth:`Request.build` follows the gem's ``PatientHttp::Request.new`` rule for rule (method
check, query parameters merged into the URL with Ruby's form encoding, secret parameters
kept apart, ``json=`` serialised with Ruby's generator, body encoding), so a request built
in Python is the same JSON text a Ruby app would enqueue. :meth:`Request.from_wire` loads
what either side wrote and :meth:`Request.to_wire` writes it back unchanged.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from patient_sidekiq.errors import InvalidRequestError, WireFormatError
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.ruby.charsets import charset_of, python_codec
from patient_sidekiq.wire.headers import Headers, SecretRef, is_secret_marker
from patient_sidekiq.wire.payload import Payload, encode_body

__all__ = ["HTTP_METHODS", "HeaderValue", "Request", "form_component", "merge_query", "param_text"]

HTTP_METHODS: Final = ("get", "post", "put", "patch", "delete")
_BODYLESS: Final = frozenset({"get", "delete"})
# Ruby's URI.encode_www_form_component leaves exactly these bytes alone.
_FORM_SAFE: Final = frozenset(b"*-._0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

HeaderValue = str | SecretRef
ParamValue = str | int | float | bool | None | SecretRef


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request as the gem serialises it."""

    http_method: str
    url: str
    headers: Headers[HeaderValue] = field(default_factory=Headers)
    body: Payload | None = None
    timeout: float | None = None
    max_redirects: int | None = None
    secret_params: Mapping[str, SecretRef] = field(default_factory=dict)
    preprocessors: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        method: str,
        url: str,
        *,
        headers: Mapping[str, HeaderValue] | None = None,
        body: str | bytes | None = None,
        json: Any = None,
        params: Mapping[str, ParamValue | Iterable[ParamValue]] | None = None,
        timeout: float | None = None,
        max_redirects: int | None = None,
        preprocessors: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Request:
        """Build a request from Python arguments exactly as the gem's ``Request.new`` would.

        A ``str`` body is sent in the content-type's charset when Python knows it (else
        UTF-8) and refused when that charset cannot represent it; ``bytes`` are sent as
        given. ``clock`` stamps gzipped bodies.
        """
        if not isinstance(method, str) or method.lower() not in HTTP_METHODS:
            raise InvalidRequestError(
                f"method must be one of {list(HTTP_METHODS)}, got: {method!r}"
            )
        http_method = method.lower()
        if not isinstance(url, str) or not url:
            raise InvalidRequestError("url is required")
        request_headers: Headers[HeaderValue] = Headers(headers or {})
        if body == "" or body == b"":
            body = None
        if json is not None:
            if body is not None:
                raise InvalidRequestError("Cannot provide both body and json")
            body = rubyjson.dumps(json)
            if "content-type" not in request_headers:
                request_headers = request_headers.merged(
                    {"content-type": "application/json; charset=utf-8"}
                )
        if http_method in _BODYLESS and body is not None:
            raise InvalidRequestError(f"body is not allowed for {http_method.upper()} requests")
        if body is not None and not isinstance(body, str | bytes):
            raise InvalidRequestError(f"body must be str or bytes, got: {type(body).__name__}")
        regular, secret_params = _split_params(params or {})
        content_type = _content_type(request_headers)
        raw = _body_bytes(body, content_type) if body is not None else None
        return cls(
            http_method=http_method,
            url=merge_query(url, regular),
            headers=request_headers,
            body=encode_body(raw, content_type, clock=clock),
            timeout=timeout,
            max_redirects=max_redirects,
            secret_params=secret_params,
            preprocessors=_preprocessor_names(preprocessors),
        )

    @classmethod
    def from_wire(cls, data: object) -> Request:
        """Load a request payload written by Ruby or Python; raise InvalidRequestError."""
        # The exact-type test first: parsed JSON is a dict, which skips the ABC check's cost.
        if type(data) is not dict and not isinstance(data, Mapping):
            raise InvalidRequestError(f"request must be an object, got {type(data).__name__}")
        method = data.get("http_method")
        if method not in HTTP_METHODS:
            raise InvalidRequestError(
                f"http_method must be one of {list(HTTP_METHODS)}, got: {method!r}"
            )
        url = data.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidRequestError("url is required")
        try:
            body = Payload.from_wire(data.get("body"))
        except WireFormatError as exc:
            raise InvalidRequestError(f"request body: {exc}") from exc
        if method in _BODYLESS and body is not None:
            raise InvalidRequestError(f"body is not allowed for {method.upper()} requests")
        timeout = data.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)
        ):
            raise InvalidRequestError(f"timeout must be a number or null, got {timeout!r}")
        max_redirects = data.get("max_redirects")
        if max_redirects is not None and (
            isinstance(max_redirects, bool) or not isinstance(max_redirects, int)
        ):
            raise InvalidRequestError(
                f"max_redirects must be an integer or null, got {max_redirects!r}"
            )
        preprocessors = data.get("preprocessors") or ()
        if preprocessors and (
            not isinstance(preprocessors, list)
            or not all(isinstance(name, str) and name for name in preprocessors)
        ):
            raise InvalidRequestError("preprocessors must be a list of non-empty names")
        # Positional, in field order: one request per job, and keywords cost a dict.
        return cls(
            method,
            url,
            _load_headers(data.get("headers")),
            body,
            timeout,
            max_redirects,
            _load_secret_params(data.get("secret_params")),
            tuple(preprocessors),
        )

    def to_wire(self) -> dict[str, Any]:
        """Return the wire object in the gem's key order (optional keys only when set)."""
        wire: dict[str, Any] = {
            "http_method": self.http_method,
            "url": self.url,
            "headers": {
                name: value.to_wire() if isinstance(value, SecretRef) else value
                for name, value in self.headers.items()
            },
            "body": self.body.to_wire() if self.body is not None else None,
            "timeout": self.timeout,
            "max_redirects": self.max_redirects,
        }
        if self.secret_params:
            wire["secret_params"] = {k: v.to_wire() for k, v in self.secret_params.items()}
        if self.preprocessors:
            wire["preprocessors"] = list(self.preprocessors)
        return wire


def _content_type(headers: Headers[HeaderValue]) -> str | None:
    value = headers.get("content-type")
    return value if isinstance(value, str) else None


def _body_bytes(body: str | bytes, content_type: str | None) -> bytes:
    if isinstance(body, bytes):
        return body
    codec = python_codec(charset_of(content_type)) if content_type else None
    if codec is not None and codecs.lookup(codec).name != "utf-8":
        try:
            return body.encode(codec)
        except UnicodeEncodeError as exc:
            # Ruby would send UTF-8 bytes labelled with this charset: mojibake at the server.
            raise InvalidRequestError(
                f"body cannot be encoded in the declared charset {codec}: {exc.reason}"
            ) from exc
    return body.encode("utf-8", "surrogatepass")


def form_component(value: str) -> str:
    """Encode one query name or value as Ruby's ``URI.encode_www_form_component`` does."""
    return "".join(
        chr(byte) if byte in _FORM_SAFE else "+" if byte == 0x20 else f"%{byte:02X}"
        for byte in value.encode("utf-8")
    )


def param_text(value: str | int | float | bool) -> str:
    """Spell a query value as Ruby's ``to_s`` does (``true``, ``1.0e+16``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return rubyjson.ruby_float_repr(value)
    return str(value)


def _split_params(
    params: Mapping[str, ParamValue | Iterable[ParamValue]],
) -> tuple[str, dict[str, SecretRef]]:
    """Return Ruby's ``URI.encode_www_form`` of the plain params, and the secret ones."""
    query = ""
    secrets: dict[str, SecretRef] = {}
    for key, value in params.items():
        if isinstance(value, SecretRef):
            secrets[key] = value
            continue
        name = form_component(str(key))
        if value is None or isinstance(value, str | int | float):
            query += ("&" if query else "") + (
                name if value is None else f"{name}={form_component(param_text(value))}"
            )
            continue
        for item in value:
            if isinstance(item, SecretRef):
                raise InvalidRequestError(f"param {key!r}: a secret cannot be part of a list")
            # Ruby 3.1 quirk kept on purpose: a nil inside a list leaves an empty segment.
            query += "&" if query else ""
            if item is not None:
                query += f"{name}={form_component(param_text(item))}"
    return query, secrets


def merge_query(url: str, query: str) -> str:
    """Append an encoded query to ``url`` (before any fragment), as the gem merges params."""
    if not query:
        return url
    base, hash_sign, fragment = url.partition("#")
    path, _, existing = base.partition("?")
    merged = f"{existing}&{query}" if existing else query
    return f"{path}?{merged}{hash_sign}{fragment}"


def _preprocessor_names(names: Iterable[str] | None) -> tuple[str, ...]:
    result = tuple(str(name) for name in (names or ()))
    if any(not name for name in result):
        raise InvalidRequestError("preprocessor names cannot be empty")
    return result


def _load_headers(data: object) -> Headers[HeaderValue]:
    if data is None:
        return Headers()
    if type(data) is not dict and not isinstance(data, Mapping):
        raise InvalidRequestError(f"headers must be an object, got {type(data).__name__}")
    headers: dict[str, HeaderValue] = {}
    for name, value in data.items():
        if is_secret_marker(value):
            headers[name] = _load_secret(value, f"header {name!r}")
        elif isinstance(value, str):
            headers[name] = value
        else:
            raise InvalidRequestError(f"header {name!r} must be a string, got {value!r}")
    return Headers(headers)


def _load_secret_params(data: object) -> dict[str, SecretRef]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidRequestError(f"secret_params must be an object, got {type(data).__name__}")
    return {
        str(name): _load_secret(value, f"secret param {name!r}") for name, value in data.items()
    }


def _load_secret(value: object, where: str) -> SecretRef:
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{where} must be a secret reference, got {value!r}")
    try:
        return SecretRef.from_wire(value)
    except WireFormatError as exc:
        raise InvalidRequestError(f"{where}: {exc}") from exc
