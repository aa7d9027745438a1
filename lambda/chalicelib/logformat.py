"""JSON logs for the Lambda: one JSON object per line, so CloudWatch metric filters can read them.

Every line carries ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; fields
passed with ``extra=`` become top-level keys; an exception becomes its traceback text under
``exception``. The Lambda runtime puts its own handler on the root logger (it frames each
record as one CloudWatch event); :func:`install_json_logging` gives that handler this
formatter instead of adding a second one, and adds a stderr handler only where none exists.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (values that JSON cannot hold become strings)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def install_json_logging(level: int = logging.INFO) -> None:
    """Make the root logger write JSON lines at ``level`` (idempotent)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    root.setLevel(level)
