"""Log line formats: ``text`` (one readable line) and ``json`` (one object per line).

Every line carries the time (UTC, ISO 8601 with milliseconds), the level, the worker (its
pid, the key of ``requests_by_worker`` in ``/stats``) and, when it is about a request,
that request's id. Access lines carry their fields as ``record.access``; they are written
as ``key=value`` pairs in text and as top-level keys in JSON.
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
        ]
        access: dict[str, Any] | None = getattr(record, "access", None)
        if access:  # the fields say it all; the message would repeat them
            parts.extend(f"{key}={_text(value)}" for key, value in access.items())
        else:
            parts.append(record.getMessage())
        request_id = getattr(record, "request_id", "")
        if request_id:
            parts.append(f"request_id={request_id}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: Any) -> str:
    text = str(value) if value is not None and value != "" else "-"
    return text if " " not in text and '"' not in text else orjson.dumps(text).decode()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, worker, logger, message, request_id, and an
    access line's fields at the top level."""

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
        access: dict[str, Any] | None = getattr(record, "access", None)
        if access:
            document.update(access)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()
