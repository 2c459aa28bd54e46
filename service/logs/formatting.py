"""Log line formats: ``text`` (one readable line) and ``json`` (one object per line).

Every line carries the time (UTC, ISO 8601 with milliseconds), the level, the worker (its
pid, the key of ``requests_by_worker`` in ``/stats``) and, when it is about a request,
that request's id. (Access lines are written by ``service.logs.access`` in the same
format, without going through :mod:`logging`.)
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson

from service.logs.request_id import current


class RequestContext(logging.Filter):
    """Stamps each record with the worker's pid and the current request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = os.getpid()
        if not hasattr(record, "request_id"):
            record.request_id = current.get()
        return True


def _timestamp(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + (
        f".{int((created - seconds) * 1000):03d}Z"
    )


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> worker=<pid> <logger>: <message> [key=value ...] [request_id=<id>]``"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record.created),
            record.levelname,
            f"worker={getattr(record, 'worker', os.getpid())}",
            f"{record.name}:",
            record.getMessage(),
        ]
        request_id = getattr(record, "request_id", "")
        if request_id:
            parts.append(f"request_id={request_id}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, worker, logger, message, request_id."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "worker": getattr(record, "worker", os.getpid()),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            document["request_id"] = request_id
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()
