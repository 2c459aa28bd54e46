"""Request ids and logs: every request gets an ``X-Request-ID`` (the client's if sane,
``request_id``), returned to the client and stamped on every log line about it; every line
has its time, level and worker (``formatting``, ``config``); the access log (``access``).

The proxy route gives its requests their ids itself (:func:`begin_request`, one call at the
top of ``blueprints/proxy.py:proxy``) rather than through Sanic middleware: a request and a
response middleware on every route cost 6 % of proxied throughput (measured,
bench/access_log_cost.py), most of it Sanic's signal dispatch around each middleware.
``startup(app)``, called once every blueprint is registered, attaches the middlewares to
the local endpoints' routes only; Sanic's own errors raised before routing (a 405...) get
their id from ``service.errors``' handlers through :func:`request_id_of`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from sanic import HTTPResponse, Request, Sanic

from service.logs.access import AccessLog, Answered, log_request
from service.logs.config import log_config
from service.logs.request_id import HEADER, RequestIds, current, is_sane

__all__ = [
    "HEADER",
    "AccessLog",
    "RequestIds",
    "begin_request",
    "is_sane",
    "log_config",
    "log_request",
    "request_id_of",
    "startup",
]

LOCAL_ROUTE = "local"


def begin_request(request: Request, ids: RequestIds) -> str:
    """Give ``request`` its id (the client's if sane), for its headers and its log lines."""
    request_id = ids.for_request(request.headers.get("x-request-id"))
    request.ctx.request_id = request_id
    current.set(request_id)
    return request_id


def request_id_of(request: Request) -> str:
    """The request's id, given now if it has none yet (an error before routing)."""
    request_id = getattr(request.ctx, "request_id", None)
    return request_id or begin_request(request, request.app.ctx.lb.request_ids)


def startup(app: Sanic) -> None:
    """The access log's life, and the id middlewares on every route but the proxy's.

    Call after the blueprints are registered: the middlewares are attached by route name.
    """
    lb = app.ctx.lb

    if lb.settings.access_log:

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

    async def assign_request_id(request: Request) -> None:
        begin_request(request, lb.request_ids)
        request.ctx.started = time.perf_counter()

    async def return_request_id(request: Request, response: HTTPResponse) -> None:
        response.headers[HEADER] = request_id_of(request)
        if lb.access_log is not None:
            started = getattr(request.ctx, "started", None)
            answered = Answered(LOCAL_ROUTE, "", response.status, len(response.body or b""))
            duration = time.perf_counter() - started if started is not None else 0.0
            lb.access_log.write(request, answered, duration)

    local = [route.name for route in app.router.routes if not _is_proxy(route.name)]
    app.register_named_middleware(assign_request_id, route_names=local, attach_to="request")
    app.register_named_middleware(return_request_id, route_names=local, attach_to="response")


def _is_proxy(route_name: str) -> bool:
    return route_name.rpartition(".")[0].endswith(".proxy")
