"""The logging configuration every process applies (Sanic's ``log_config``): one format for
the service's own loggers and Sanic's, on stderr (Sanic's own access lines, if turned on
with ``sanic --access-logs``, on stdout like ours, see ``service.logs.access``)."""

from __future__ import annotations

from typing import Any

FORMATTERS = {
    "text": "service.logs.formatting.TextFormatter",
    "json": "service.logs.formatting.JsonFormatter",
}


def log_config(log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document for ``log_format`` (``text`` or ``json``)."""

    def handler(stream: str) -> dict[str, Any]:
        return {
            "class": "logging.StreamHandler",
            "formatter": "lb",
            "filters": ["request_context"],
            "stream": f"ext://sys.{stream}",
        }

    def logger(name: str, level: str = "INFO") -> dict[str, Any]:
        return {"level": level, "handlers": [name], "propagate": False}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_context": {"()": "service.logs.formatting.RequestContext"}},
        "formatters": {"lb": {"()": FORMATTERS[log_format]}},
        "handlers": {"console": handler("stderr"), "access": handler("stdout")},
        "root": {"level": "WARNING", "handlers": ["console"]},
        "loggers": {
            "service": logger("console"),
            "sanic.root": logger("console"),
            "sanic.error": logger("console"),
            "sanic.server": logger("console"),
            "sanic.websockets": logger("console", "WARNING"),
            "sanic.access": logger("access"),
        },
    }
