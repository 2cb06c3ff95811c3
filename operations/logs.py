"""Logs: one structured line per LLM request, and the JSON formatter for LOG_FORMAT=json.

The request line carries ids, names and numbers only: the request id, user id, the key's
public prefix, provider, model, status, tokens, credits and latency. It never holds a key, a
prompt or a completion: the Meter's record it is built from has none.
"""

from __future__ import annotations

import json
import logging
import sys
import time

requests_logger = logging.getLogger("operations.requests")

# What the request line takes from the Meter's usage record, in this order.
REQUEST_FIELDS = (
    "request_id", "user_id", "route", "provider", "model", "stream", "status", "error_code",
    "prompt_tokens", "completion_tokens", "estimated", "credits", "latency_ms", "ttft_ms",
)  # fmt: skip
REQUEST_LINE = "%s %s/%s %s %s+%s tokens %s µcr %sms"
# LogRecord attributes that are not extra fields given to a log call.
# Django's `request` (an HttpRequest, whose URL may carry a query string) is left out too.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request"}


def log_format_default() -> str:
    """Return "text" when stderr is a terminal (a person reads it), else "json" (a collector)."""
    return "text" if sys.stderr.isatty() else "json"


def request_logged(*, record: dict, key_prefix: str = "") -> None:
    """Log the one line of a request that ended, from the Meter's usage record."""
    if not requests_logger.isEnabledFor(logging.INFO):
        return
    fields = {name: record.get(name) for name in REQUEST_FIELDS}
    fields["key_prefix"] = key_prefix
    args = (
        fields["request_id"], fields["provider"], fields["model"], fields["status"],
        fields["prompt_tokens"], fields["completion_tokens"], fields["credits"],
        fields["latency_ms"],
    )  # fmt: skip
    # The record is made here rather than by `info()`, which would walk the stack for the
    # caller's file and line: a line every request writes needs neither.
    line = requests_logger.makeRecord(
        requests_logger.name, logging.INFO, __file__, 0, REQUEST_LINE, args, None,
        func="request_logged", extra={"call": fields},
    )  # fmt: skip
    requests_logger.handle(line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, any extra fields (a request line's
    under "call"), and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
