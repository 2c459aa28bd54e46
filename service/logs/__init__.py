"""Request ids and logs: every request gets an ``X-Request-ID`` (the client's if sane,
``request_id``), returned to the client and stamped on every log line about it; every line
has its time, level and worker (``formatting``, ``config``); the access log (``access``).

``startup(app)`` registers the two middlewares: one gives the request its id (and the
clock of a local endpoint's access line), the other returns the id and writes the access
line of the endpoints the proxy does not measure itself.
"""

from __future__ import annotations

import time

from sanic import HTTPResponse, Request, Sanic

from service.logs.access import log_request
from service.logs.config import log_config
from service.logs.request_id import HEADER, RequestIds, current, is_sane

__all__ = ["HEADER", "RequestIds", "is_sane", "log_config", "log_request", "startup"]

LOCAL_ROUTE = "local"


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    access = lb.settings.access_log

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
        if access and not _is_proxied(request):
            started = getattr(request.ctx, "started", None)
            log_request(
                request, route=LOCAL_ROUTE, target="", status=response.status,
                size=len(response.body or b""),
                duration_s=time.perf_counter() - started if started is not None else 0.0,
                access=True,
            )  # fmt: skip


def _is_proxied(request: Request) -> bool:
    """The proxy logs its own requests once they are measured (their body still streams
    when this middleware runs)."""
    route = request.route
    return route is not None and route.name.rpartition(".")[0].endswith(".proxy")
