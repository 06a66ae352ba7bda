"""JSON log lines (``CHATSITE_LOG_FORMAT=json``): one object per line, for a log
shipper to read without a parser of its own.

The keys are stable (docs/deploy.md, "Logs"): ``time`` (UTC, ISO 8601 with
milliseconds), ``level``, ``logger``, ``message`` (the line as the text format
writes it), then the record's structured ``fields`` when it has them (the
reply-end line's ``reply``, ``status``, ``error_kind``...), and ``exception``
(the traceback) when one is logged. Nothing is added that the text line does
not carry: secrets stay out of both (the providers redact upstream bodies).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

#: The keys every line has, in this order.
BASE_KEYS = ("time", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)
