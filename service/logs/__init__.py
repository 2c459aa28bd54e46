"""Request ids and logs: every request gets an ``X-Request-ID`` (the client's if sane,
``request_id``), returned to the client and stamped on every log line about it; every line
has its time, level and worker (``formatting``, ``config``); the access log (``access``).

``startup(app)`` registers the two middlewares: one gives the request its id (and the
clock of a local endpoint's access line), the other returns the id and writes the access
line of the endpoints the proxy does not measure itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from sanic import HTTPResponse, Request, Sanic

from service.logs.access import AccessLog, log_request
from service.logs.config import log_config
from service.logs.request_id import HEADER, RequestIds, current, is_sane

__all__ = [
    "HEADER",
    "AccessLog",
    "RequestIds",
    "is_sane",
    "log_config",
    "log_request",
    "startup",
]

LOCAL_ROUTE = "local"


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    access = lb.settings.access_log

    if access:

        @app.before_server_start
        async def open_access_log(app: Sanic) -> None:
            lb.access_log = AccessLog(lb.settings.log_format)
            app.ctx.access_flusher = asyncio.create_task(lb.access_log.flush_periodically())

        @app.after_server_stop
        async def close_access_log(app: Sanic) -> None:
            flusher = getattr(app.ctx, "access_flusher", None)
            if flusher is not None:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
            if lb.access_log is not None:
                lb.access_log.flush()

    @app.on_request
    async def assign_request_id(request: Request) -> None:
        request_id = lb.request_ids.for_request(request.headers.get("x-request-id"))
        request.ctx.request_id = request_id
        current.set(request_id)
        if access:
            request.ctx.started = time.perf_counter()

    @app.on_response
    async def return_request_id(request: Request, response: HTTPResponse) -> None:
        request_id = getattr(request.ctx, "request_id", None)
        if request_id is None:  # refused before routing (405, a bad request line...)
            request_id = lb.request_ids.for_request(request.headers.get("x-request-id"))
            request.ctx.request_id = request_id
            current.set(request_id)
        response.headers[HEADER] = request_id
        if lb.access_log is not None and not _is_proxied(request):
            started = getattr(request.ctx, "started", None)
            lb.access_log.write(
                request, route=LOCAL_ROUTE, target="", status=response.status,
                size=len(response.body or b""),
                duration_s=time.perf_counter() - started if started is not None else 0.0,
            )  # fmt: skip


def _is_proxied(request: Request) -> bool:
    """The proxy logs its own requests once they are measured (their body still streams
    when this middleware runs)."""
    route = request.route
    return route is not None and route.name.rpartition(".")[0].endswith(".proxy")
