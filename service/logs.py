"""Logging for the service's processes (``nnverify serve``, ``nnverify worker``, Celery
workers): text for people, or one JSON object a line for a log collector
(``NNVERIFY_LOG_FORMAT=json``).  Records about a job carry its id in ``extra={"job_id":
...}``; the JSON form keeps every such field, so a job's story can be filtered by its id.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from .settings import ServiceSettings

# the attributes every LogRecord has; anything else on a record came in through ``extra``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call added with ``extra=``, such as ``job_id``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the extra
    fields, and the traceback as ``exc_info`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            **extra_fields(record)}
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message [key=value ...]``, the extra fields at the end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        line = super().format(record)
        return f"{line} [{extra}]" if extra else line


def configure_logging(settings: ServiceSettings) -> None:
    """The root logger writes to stderr in the settings' format and level (replacing any
    handlers it had: call once per process, at its start)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
