"""The per-request line and counters (worker/request_log.py): masking, fields, levels."""

from __future__ import annotations

import io
import json
import logging

import pytest

from patient_sidekiq.cli.logging_setup import JsonFormatter, PlainFormatter
from patient_sidekiq.http.http_client import ExecutionResult
from patient_sidekiq.wire.failures import HttpError, RequestError, TooManyRedirectsError
from patient_sidekiq.wire.response import Response
from patient_sidekiq.worker.request_log import FILTERED, MAX_URL_LENGTH, RequestReport, mask_url

LOGGER = "patient_sidekiq.worker.request_log"


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("https://api.example.com/users/1", "https://api.example.com/users/1"),
        (
            "https://api.example.com/v1?api_key=s3cr3t&page=2",
            f"https://api.example.com/v1?api_key={FILTERED}&page={FILTERED}",
        ),
        ("http://h/x?flag&empty=&k=v", f"http://h/x?flag&empty=&k={FILTERED}"),
        ("https://bob:hunter2@h:8443/p?q=1", f"https://{FILTERED}@h:8443/p?q={FILTERED}"),
        ("https://token@h/", f"https://{FILTERED}@h/"),
        ("https://h/p#section", "https://h/p"),
        ("https://h/a@b", "https://h/a@b"),  # an @ in the path is not userinfo
        (None, ""),
    ],
)
def test_query_values_and_userinfo_are_masked(url: str | None, logged: str) -> None:
    assert mask_url(url) == logged


def test_a_very_long_url_is_cut() -> None:
    masked = mask_url("https://h/" + "a" * 5000)
    assert len(masked) == MAX_URL_LENGTH
    assert masked.endswith("…")


def response(status: int = 200, url: str = "https://api.example.com/u?token=abc") -> Response:
    return Response.build(
        status=status,
        headers={},
        body=b"{}",
        duration=0.0842,
        request_id="req-1",
        url=url,
        http_method="get",
    )


def connection_refused() -> RequestError:
    return RequestError(
        class_name="Errno::ECONNREFUSED",
        message="Connection refused - connect(2) for 10.0.0.7:80",
        backtrace=None,
        error_type="connection",
        duration=0.0009,
        request_id="req-2",
        url="http://10.0.0.7/?password=pw",
        http_method="post",
    )


def line(
    caplog: pytest.LogCaptureFixture, result: ExecutionResult, level: str = "info"
) -> logging.LogRecord:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        RequestReport(level).finished("req-1", result, "default")  # type: ignore[arg-type]
    [record] = caplog.records
    return record


def test_a_response_logs_method_masked_url_status_duration_id_and_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = line(caplog, response())
    assert record.levelno == logging.INFO
    assert (
        PlainFormatter()
        .format(record)
        .endswith(
            f"{LOGGER}: request done request_id=req-1 method=GET "
            f"url=https://api.example.com/u?token={FILTERED} status=200 duration_ms=84.2 "
            "queue=default"
        )
    )


def test_a_transport_failure_logs_the_ruby_class_error_type_and_message_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = PlainFormatter().format(line(caplog, connection_refused()))
    assert text.endswith(
        f"request failed request_id=req-1 method=POST url=http://10.0.0.7/?password={FILTERED} "
        "error=Errno::ECONNREFUSED error_type=connection duration_ms=0.9 queue=default "
        "error_message=Connection refused - connect(2) for 10.0.0.7:80"
    )
    assert "pw" not in text.replace("password", "")


def test_an_http_error_keeps_its_status_and_masks_the_url_its_message_quotes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = HttpError.for_response(response(404, "https://h/x?key=topsecret"))
    record = line(caplog, error)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "request failed"
    assert (entry["status"], entry["error"], entry["error_type"]) == (
        404,
        "PatientHttp::ClientError",
        "http_error",
    )
    assert entry["duration_ms"] == 84.2
    assert "topsecret" not in JsonFormatter().format(record)
    assert f"https://h/x?key={FILTERED}" in entry["error_message"]


def test_a_redirect_error_masks_every_url_of_its_chain(caplog: pytest.LogCaptureFixture) -> None:
    error = TooManyRedirectsError(
        url="https://h/a?sig=one",
        http_method="get",
        duration=0.5,
        request_id="req-3",
        redirects=["https://h/a?sig=one", "https://h/b?sig=two"],
    )
    text = PlainFormatter().format(line(caplog, error))
    assert "error=PatientHttp::TooManyRedirectsError error_type=redirect" in text
    assert "one" not in text
    assert "two" not in text


def test_a_multi_line_message_stays_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    error = connection_refused()
    error.message = "first\nsecond\r\nthird"
    text = PlainFormatter().format(line(caplog, error))
    assert "\n" not in text
    assert text.endswith("error_message=first\\nsecond\\r\\nthird")


def test_the_level_follows_log_requests_and_off_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert line(caplog, response(), "debug").levelno == logging.DEBUG
    caplog.clear()
    report = RequestReport("off")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        report.finished("req-1", response(), "default")
    assert caplog.records == []
    assert report.counters.finished == {("200", "", ""): 1}  # counted all the same


def test_a_level_below_the_loggers_threshold_writes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            RequestReport("debug").finished("req-1", response(), "default")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == ""
    assert caplog.records == []


def test_results_are_counted_by_status_error_and_queue() -> None:
    report = RequestReport("off")
    report.finished("a", response(200), "default")
    report.finished("b", response(200), "default")
    report.finished("c", connection_refused(), "patient_http_callbacks")
    report.finished("d", HttpError.for_response(response(503)), "default")
    report.refused()
    report.dropped()
    counters = report.counters
    assert counters.finished == {
        ("200", "", ""): 2,
        ("", "connection", "Errno::ECONNREFUSED"): 1,
        ("503", "http_error", "PatientHttp::ServerError"): 1,
    }
    assert counters.callbacks_pushed == {"default": 3, "patient_http_callbacks": 1}
    assert counters.durations["response"].count == 2
    assert counters.durations["error"].count == 2
    assert counters.durations["response"].total == pytest.approx(2 * 0.0842)
    assert (counters.capacity_refusals, counters.results_dropped) == (1, 1)
