"""What the HTTP processor reports about each finished request: one log line and its counters.

Role: :class:`RequestReport` is called once per request whose result was delivered (the
CallbackWorker job pushed). It bumps :class:`~patient_sidekiq.worker.counters.RequestCounters`
(read by ``/metrics``) and, at the level ``log_requests`` names (``info``, ``debug``, or
``off`` for none), logs one line the way Sidekiq logs a job's ``done``/``fail``::

    request done request_id=… method=GET url=https://api.example.com/u?token=[FILTERED]
        status=200 duration_ms=84.2 queue=default
    request failed request_id=… method=GET url=http://10.0.0.7/ error=Errno::ECONNREFUSED
        error_type=connection duration_ms=0.9 queue=default error_message=Connection refused …

The fields are ``extra=`` values of the record, so JSON logs carry them as fields (status
and duration as numbers) and plain logs as ``key=value`` pairs, ``error_message`` last since
it may hold spaces. ``error`` is the Ruby class name the callback's ``on_error`` sees.

URLs are masked by :func:`mask_url`: every query value and any userinfo become
``[FILTERED]`` (names and the path stay, to tell requests apart), so API keys passed as
query parameters or ``user:password@`` never reach a log. Touches no Redis keys.
"""

from __future__ import annotations

import logging
import re
from typing import Final, Literal

from patient_sidekiq.http.http_client import ExecutionResult
from patient_sidekiq.wire.failures import HttpError, RedirectError, RequestError
from patient_sidekiq.wire.response import Response
from patient_sidekiq.worker.counters import RequestCounters

__all__ = ["FILTERED", "MAX_URL_LENGTH", "RequestReport", "mask_url"]

log = logging.getLogger(__name__)

FILTERED: Final = "[FILTERED]"
"""What replaces a query value or userinfo in a logged URL (the Rails convention)."""
MAX_URL_LENGTH: Final = 1000
"""Longer masked URLs are cut, ending in ``…``: one line per request, never a screenful."""

_FUNC: Final = "RequestReport.finished"
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
_LEVELS: Final = {"info": logging.INFO, "debug": logging.DEBUG}


def mask_url(url: str | None) -> str:
    """``url`` with each query value and any userinfo replaced by :data:`FILTERED`.

    ``https://u:p@h/x?key=s3cr3t&flag&page=`` → ``https://[FILTERED]@h/x?key=[FILTERED]&flag&page=``:
    empty values and bare names have nothing to hide and stay; the fragment (never sent)
    is dropped. Not a URL parser's round trip: the text is the one the request used.
    """
    if not url:
        return ""
    if "?" not in url and "@" not in url and "#" not in url:  # most URLs: nothing to do
        return url if len(url) <= MAX_URL_LENGTH else url[: MAX_URL_LENGTH - 1] + "…"
    url = url.split("#", 1)[0]
    base, question, query = url.partition("?")
    scheme, separator, rest = base.partition("://")
    if separator:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = FILTERED + "@" + authority.rpartition("@")[2]
            base = f"{scheme}://{authority}{slash}{path}"
    if question:
        masked = []
        for pair in query.split("&"):
            name, equals, value = pair.partition("=")
            masked.append(f"{name}={FILTERED}" if equals and value else pair)
        base = f"{base}?{'&'.join(masked)}"
    return base if len(base) <= MAX_URL_LENGTH else base[: MAX_URL_LENGTH - 1] + "…"


def _logged_message(text: str) -> str:
    """An error message fit for the line: URLs in it masked (the gem's messages quote the
    request's URL, redirect errors the whole chain), on one line."""
    if "://" in text:
        text = _URL.sub(lambda match: mask_url(match.group()), text)
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text


class RequestReport:
    """Counts every delivered result and logs it at the ``log_requests`` level.

    One per RequestWorker; ``counters`` is what ``/metrics`` reads (a fresh one by default).
    """

    def __init__(
        self,
        log_requests: Literal["info", "debug", "off"] = "info",
        counters: RequestCounters | None = None,
    ) -> None:
        self.level = _LEVELS.get(log_requests)  # None: off
        self.counters = counters if counters is not None else RequestCounters()

    def finished(self, request_id: str, result: ExecutionResult, queue: str) -> None:
        """Record one result whose CallbackWorker job went to ``queue``."""
        counters = self.counters
        duration = result.duration or 0.0
        if isinstance(result, Response):
            counters.finished[(str(result.status), "", "")] += 1
            counters.durations["response"].observe(duration)
        else:
            counters.finished[_error_key(result)] += 1
            counters.durations["error"].observe(duration)
        counters.callbacks_pushed[queue] += 1
        level = self.level
        if level is not None and log.isEnabledFor(level):
            message, fields = _line(request_id, result, queue, duration)
            # Not log.log(): its findCaller walks the stack (a quarter of the line's cost,
            # once per request) to name a caller we already know.
            log.handle(
                log.makeRecord(log.name, level, __file__, 0, message, (), None, _FUNC, fields)
            )

    def dropped(self) -> None:
        """Count one result not delivered: another process had re-enqueued its request."""
        self.counters.results_dropped += 1

    def refused(self) -> None:
        """Count one job refused at ``max_connections``."""
        self.counters.capacity_refusals += 1


def _error_key(result: RequestError | HttpError | RedirectError) -> tuple[str, str, str]:
    if isinstance(result, HttpError):
        return str(result.status), result.error_type, result.ruby_class
    if isinstance(result, RedirectError):
        return "", result.error_type, result.ruby_class
    return "", result.error_type, result.class_name


def _line(
    request_id: str, result: ExecutionResult, queue: str, duration: float
) -> tuple[str, dict[str, object]]:
    """The message and the ``extra`` fields of one request's line (in the order shown)."""
    fields: dict[str, object] = {
        "request_id": request_id,
        "method": (result.http_method or "").upper(),
        "url": mask_url(result.url),
    }
    if isinstance(result, Response):
        fields["status"] = result.status
        message = "request done"
    else:
        status, error_type, error_class = _error_key(result)
        if status:
            fields["status"] = int(status)
        fields["error"] = error_class
        fields["error_type"] = error_type
        message = "request failed"
    fields["duration_ms"] = round(duration * 1000, 1)
    fields["queue"] = queue
    if not isinstance(result, Response):
        fields["error_message"] = _logged_message(result.message)
    return message, fields
