"""AWS Signature Version 4: the built-in ``aws_sigv4`` request preprocessor.

Role: a job can call an AWS API (S3, API Gateway, OpenSearch, Lambda function URLs …)
without carrying any key. The request names the preprocessor; the worker signs it just
before sending, with credentials that only the worker holds. :class:`AwsSigV4Signer` is
that preprocessor; :func:`sign` is the one-shot function behind it.

What is signed, and why (AWS's "Create a signed AWS API request" rules):

* the method, and the path **as it goes on the request line** (the transport's own
  rendering of the URL: :func:`canonical_uri` says how it is derived). AWS recomputes the
  signature from what it receives, so we must sign those bytes, not the URL as written.
  For every service but S3 the path is normalised (``.``, ``..`` and empty segments go)
  and percent-encoded once more, which AWS calls double encoding; S3 keys may contain
  ``//`` or ``..`` and are read literally, so S3 gets each segment encoded once;
* the query, decoded and encoded again the RFC 3986 way, sorted by name then value. AWS
  reads ``+`` in a query as a literal plus (not a space), so that is how it is signed;
* ``host``, ``content-type`` and every ``x-amz-*`` header, plus any the caller names.
  ``host`` and ``x-amz-*`` are what AWS requires; ``content-type`` tells AWS how to read
  the body, so a proxy must not change it unnoticed. The worker's own headers
  (``user-agent``, ``accept-encoding``, ``x-request-id``) stay out: they carry no meaning
  for AWS, and a proxy that rewrites them would otherwise break the signature;
* the SHA-256 of the body (or ``UNSIGNED-PAYLOAD`` when asked), so the body cannot be
  swapped. S3 needs that hash in ``x-amz-content-sha256`` as well, and gets it.

The signature is written to ``authorization`` with ``x-amz-date`` (and
``x-amz-security-token`` for temporary credentials). The worker runs preprocessors again on
every hop of a same-origin redirect chain, each time on a fresh copy of the request's
headers; a second signing of the same request replaces the first rather than adding to it.

Configuration from the environment, read where the standard AWS tools read it:

* credentials: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and, for temporary
  credentials, ``AWS_SESSION_TOKEN``. Unless credentials are given in code,
  :class:`AwsSigV4Signer` reads them at each request, so rotated keys and renewed session
  tokens in the environment are used without a restart;
* region: ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, read once when the signer is made.

A missing setting is a :class:`~patient_sidekiq.errors.ConfigurationError` naming the
variable. Secrets are never logged and never part of a ``repr``. Touches no Redis keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, unquote_to_bytes

import httpx

from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.http.targets import direct_target

if TYPE_CHECKING:
    from patient_sidekiq.http.settings import OutgoingRequest

__all__ = [
    "ALGORITHM",
    "UNSIGNED_PAYLOAD",
    "AwsCredentials",
    "AwsSigV4Signer",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "credentials_from_env",
    "region_from_env",
    "sign",
    "signature",
    "string_to_sign",
]

ALGORITHM: Final = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
"""The payload hash AWS accepts in place of the body's SHA-256 (S3, and some other APIs)."""

_ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
_SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"
_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"
_REGION_VARIABLES: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")

# Headers this module writes; any earlier copy (another signing of the same request) goes
# first, whatever its case, so exactly one of each is sent.
_AUTHORIZATION: Final = "authorization"
_DATE: Final = "x-amz-date"
_TOKEN: Final = "x-amz-security-token"
_CONTENT_SHA256: Final = "x-amz-content-sha256"

# SigV4 trims header values and collapses runs of spaces; tabs are HTTP whitespace too.
_SPACES: Final = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class AwsCredentials:
    """An access key, and the session token that temporary credentials come with.

    Only ``access_key_id`` shows in ``repr``: it names the key, it does not prove anything.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def credentials_from_env(environ: Mapping[str, str] = os.environ) -> AwsCredentials:
    """Credentials from ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and (optional)
    ``AWS_SESSION_TOKEN``; an empty variable counts as unset.

    Raises :class:`ConfigurationError` naming each missing variable, never a value.
    """
    access_key_id = environ.get(_ACCESS_KEY_ID, "")
    secret_access_key = environ.get(_SECRET_ACCESS_KEY, "")
    missing = [
        name
        for name, value in (
            (_ACCESS_KEY_ID, access_key_id),
            (_SECRET_ACCESS_KEY, secret_access_key),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError(
            f"AWS SigV4 signing needs credentials: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set"
        )
    return AwsCredentials(
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        session_token=environ.get(_SESSION_TOKEN) or None,
    )


def region_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """The region from ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` (the AWS CLI's order)."""
    for name in _REGION_VARIABLES:
        value = environ.get(name, "")
        if value:
            return value
    raise ConfigurationError(
        "AWS SigV4 signing needs a region: pass region=, or set AWS_REGION (or AWS_DEFAULT_REGION)"
    )


def sign(
    request: OutgoingRequest,
    *,
    service: str,
    region: str,
    credentials: AwsCredentials,
    now: datetime | None = None,
    unsigned_payload: bool = False,
    signed_headers: Iterable[str] = (),
) -> None:
    """Sign ``request`` in place: set ``x-amz-date``, ``authorization`` and, as needed,
    ``x-amz-security-token`` and ``x-amz-content-sha256``.

    ``service`` and ``region`` form the credential scope (``s3``, ``execute-api``,
    ``es`` …). ``now`` defaults to the current time; a naive datetime is taken as UTC.
    ``unsigned_payload`` signs ``UNSIGNED-PAYLOAD`` instead of the body's hash (the
    service must allow it). ``signed_headers`` names headers to sign besides the standard
    ones, when a service or a proxy policy asks for them; a named header the request does
    not carry is skipped.
    """
    _check_scope(service=service, region=region)
    if not credentials.access_key_id or not credentials.secret_access_key:
        raise ConfigurationError("AWS credentials need an access key id and a secret key")
    moment = _utc(now)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    headers = request.headers
    # Our own headers from an earlier signing would be signed again (x-amz-*) or sent
    # twice; the caller's other headers stay as they are.
    _drop(headers, _AUTHORIZATION, _DATE)
    headers[_DATE] = amz_date
    # Without a session token, a token header already there is the caller's own (a request
    # may carry one as a secret header): it stays, and is signed like any x-amz-* header.
    if credentials.session_token:
        _drop(headers, _TOKEN)
        headers[_TOKEN] = credentials.session_token
    payload_hash = (
        UNSIGNED_PAYLOAD if unsigned_payload else hashlib.sha256(request.body or b"").hexdigest()
    )
    # S3 refuses SigV4 requests without this header, other services read it when present:
    # it is always rewritten, so a stale value (another body, another mode) never remains.
    if service == "s3" or unsigned_payload or _find(headers, _CONTENT_SHA256) is not None:
        _drop(headers, _CONTENT_SHA256)
        headers[_CONTENT_SHA256] = payload_hash
    names, canonical = _canonical(request, service=service, extra=signed_headers)
    to_sign = string_to_sign(canonical, amz_date=amz_date, region=region, service=service)
    signed = signature(
        credentials.secret_access_key,
        to_sign,
        date=amz_date[:8],
        region=region,
        service=service,
    )
    headers[_AUTHORIZATION] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/"
        f"{_scope(amz_date[:8], region, service)}, "
        f"SignedHeaders={names}, Signature={signed}"
    )


class AwsSigV4Signer:
    """The ``aws_sigv4`` preprocessor: signs every request it is given for one service
    and region.

    ``region`` None reads ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, now. ``credentials``
    is fixed credentials, a callable called at each request (for a credential provider of
    your own), or None to read the environment at each request. ``unsigned_payload`` and
    ``signed_headers`` are passed to :func:`sign`.
    """

    __slots__ = ("_credentials", "_region", "_service", "_signed_headers", "_unsigned_payload")

    def __init__(
        self,
        *,
        service: str,
        region: str | None = None,
        credentials: AwsCredentials | Callable[[], AwsCredentials] | None = None,
        unsigned_payload: bool = False,
        signed_headers: Iterable[str] = (),
    ) -> None:
        resolved_region = region_from_env() if region is None else region
        _check_scope(service=service, region=resolved_region)
        self._service = service
        self._region = resolved_region
        self._credentials = credentials
        self._unsigned_payload = unsigned_payload
        self._signed_headers = tuple(name.lower() for name in signed_headers)

    @property
    def service(self) -> str:
        """The service name of the credential scope (``s3``, ``execute-api`` …)."""
        return self._service

    @property
    def region(self) -> str:
        """The region of the credential scope."""
        return self._region

    def __call__(self, request: OutgoingRequest) -> None:
        """Sign ``request`` in place with the credentials in force right now."""
        sign(
            request,
            service=self._service,
            region=self._region,
            credentials=self._current_credentials(),
            unsigned_payload=self._unsigned_payload,
            signed_headers=self._signed_headers,
        )

    def _current_credentials(self) -> AwsCredentials:
        source = self._credentials
        if source is None:
            return credentials_from_env()
        if isinstance(source, AwsCredentials):
            return source
        return source()

    def __repr__(self) -> str:
        source = self._credentials
        if source is None:
            described = "<from environment>"
        elif isinstance(source, AwsCredentials):
            described = repr(source)
        else:
            described = "<from callable>"
        return (
            f"AwsSigV4Signer(service={self._service!r}, region={self._region!r}, "
            f"credentials={described}, unsigned_payload={self._unsigned_payload!r})"
        )


def canonical_request(
    request: OutgoingRequest, *, service: str, signed_headers: Iterable[str] = ()
) -> str:
    """The canonical request of ``request`` as it stands (after :func:`sign`, the one that
    was signed): method, path, query, signed headers and payload hash, one per line.

    The payload hash is ``x-amz-content-sha256`` when the request carries it (AWS reads it
    from there), else the SHA-256 of the body.
    """
    return _canonical(request, service=service, extra=signed_headers)[1]


def canonical_uri(path: str, *, service: str) -> str:
    """The canonical form of ``path``, the path exactly as written on the request line.

    For S3, each segment is decoded and encoded once (keys are literal: no normalising).
    For other services the path loses ``.``, ``..`` and empty segments (RFC 3986 dot
    removal; a trailing slash stays) and is then percent-encoded as written, so an escape
    already there is encoded a second time (``%20`` becomes ``%2520``).
    """
    if not path.startswith("/"):
        path = "/" + path
    if service == "s3":
        return "/".join(quote(unquote_to_bytes(segment), safe="~") for segment in path.split("/"))
    return quote(_remove_dot_segments(path), safe="/~")


def canonical_query_string(query: str) -> str:
    """The canonical form of a raw query string (without ``?``).

    Each name and value is percent-decoded (an invalid escape stays as written) and
    encoded again, only ``A-Z a-z 0-9 - _ . ~`` left bare; ``+`` is a plus sign. Pairs are
    sorted by encoded name, then encoded value; a name without ``=`` gets an empty value.
    """
    pairs: list[tuple[str, str]] = []
    for piece in query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        pairs.append(
            (quote(unquote_to_bytes(name), safe="~"), quote(unquote_to_bytes(value), safe="~"))
        )
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def string_to_sign(canonical: str, *, amz_date: str, region: str, service: str) -> str:
    """The string to sign: algorithm, timestamp, credential scope and the hash of
    ``canonical``, one per line."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{_scope(amz_date[:8], region, service)}\n{digest}"


def signature(secret_access_key: str, to_sign: str, *, date: str, region: str, service: str) -> str:
    """The hex HMAC-SHA256 of ``to_sign`` under the key derived for ``date`` (YYYYMMDD),
    ``region`` and ``service``."""
    key = _hmac(f"AWS4{secret_access_key}".encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _canonical(request: OutgoingRequest, *, service: str, extra: Iterable[str]) -> tuple[str, str]:
    """The signed-headers list and the canonical request."""
    host, path, query = _as_sent(request.url)
    wanted = {name.lower() for name in extra}
    values: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered == "host":
            # httpx sends the caller's host header instead of the URL's: sign that one
            host = value
        elif lowered == "content-type" or lowered.startswith("x-amz-") or lowered in wanted:
            values.setdefault(lowered, []).append(_SPACES.sub(" ", value.strip(" \t")))
    values["host"] = [_SPACES.sub(" ", host.strip(" \t"))]
    names = sorted(values)
    payload_hash = _find(request.headers, _CONTENT_SHA256)
    if payload_hash is None:
        payload_hash = hashlib.sha256(request.body or b"").hexdigest()
    lines = [
        request.method.upper(),
        canonical_uri(path, service=service),
        canonical_query_string(query),
        *(f"{name}:{','.join(values[name])}" for name in names),
        "",
        ";".join(names),
        payload_hash,
    ]
    return ";".join(names), "\n".join(lines)


def _as_sent(url: str) -> tuple[str, str, str]:
    """The ``host`` header, path and query that the transport sends for ``url``.

    A plain printable-ASCII URL goes out as written (the HTTP/1.1 fast path writes it
    verbatim, and httpx keeps it apart from a few characters RFC 3986 forbids anyway);
    anything else is what httpx makes of it: IDNA host, spaces and UTF-8 percent-encoded.
    """
    target = direct_target(url)
    if target is not None:
        path, _, query = target.path.partition("?")
        return target.host_header, path, query
    parsed = httpx.URL(url)
    path, _, query = parsed.raw_path.decode("ascii").partition("?")
    return parsed.netloc.decode("ascii"), path or "/", query


def _remove_dot_segments(path: str) -> str:
    """``path`` without ``.``, ``..`` or empty segments; a trailing slash (or a final
    dot segment, which names a directory) is kept."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment not in ("", "."):
            kept.append(segment)
    if not kept:
        return "/"
    trailing = "/" if segments[-1] in ("", ".", "..") else ""
    return "/" + "/".join(kept) + trailing


def _scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


def _check_scope(*, service: str, region: str) -> None:
    # Both end up between slashes in the credential scope; anything else is a typo that
    # AWS would only report as a signature mismatch.
    for what, value in (("service", service), ("region", region)):
        if not value or "/" in value or value != value.strip():
            raise ConfigurationError(f"AWS SigV4 {what} must be a plain name, not {value!r}")


def _find(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _drop(headers: dict[str, str], *names: str) -> None:
    for key in [key for key in headers if key.lower() in names]:
        del headers[key]
