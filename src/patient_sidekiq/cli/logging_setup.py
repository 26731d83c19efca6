"""Log output of ``patient-sidekiq`` commands: plain lines or one JSON object per line.

Plain lines follow Sidekiq's own shape (time, pid, level, message) so an operator grepping a
Ruby worker's log reads ours the same way; JSON lines carry the same facts as fields for log
shippers, plus any ``extra=`` values a log call attached. Touches no Redis keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final, Literal, TextIO

__all__ = ["JsonFormatter", "PlainFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else was attached with ``extra=`` and is data.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


def _timestamp(created: float) -> str:
    # Sidekiq prints UTC with milliseconds and a Z; the same makes mixed logs sort together.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class PlainFormatter(logging.Formatter):
    """``2026-11-25T18:00:00.123Z pid=42 INFO patient_sidekiq.sidekiq.launcher: message``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as a single plain line (tracebacks follow on their own lines)."""
        line = (
            f"{_timestamp(record.created)} pid={record.process} {record.levelname} "
            f"{record.name}: {record.getMessage()}"
        )
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``pid``, ``level``, ``logger``, ``msg`` and extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as a single JSON line."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "pid": record.process,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    log_format: Literal["plain", "json"] = "plain",
    level: str = "info",
    *,
    stream: TextIO | None = None,
) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``log_format``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx/httpcore log every request at INFO/DEBUG: thousands of lines a second here.
    for noisy in ("httpx", "httpcore", "hpack", "h2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
