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
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from sanic import HTTPResponse, Request, Sanic

from service.logs.access import AccessLog, Answered, log_request
from service.logs.config import log_config
from service.logs.request_id import HEADER, RequestIds, current, is_sane

Handler = Callable[..., Awaitable[HTTPResponse]]

__all__ = [
    "HEADER",
    "AccessLog",
    "RequestIds",
    "answered_here",
    "begin_request",
    "close_access_log",
    "is_sane",
    "log_config",
    "log_request",
    "open_access_log",
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
    """The access log's life (its lines come from ``proxy()`` and ``answered_here``)."""
    lb = app.ctx.lb

    if lb.settings.access_log:

        @app.before_server_start
        async def open_access_log_at_start(app: Sanic) -> None:
            open_access_log(app)

    @app.after_server_stop
    async def close_access_log_at_stop(app: Sanic) -> None:
        await close_access_log(app)


def open_access_log(app: Sanic) -> None:
    """Start writing access lines (at start-up, or when a reload turns the log on)."""
    lb = app.ctx.lb
    if lb.access_log is None:
        lb.access_log = AccessLog(lb.settings.log_format, client_address=lb.client_addresses.of)
        app.ctx.access_flusher = asyncio.create_task(lb.access_log.flush_periodically())


async def close_access_log(app: Sanic) -> None:
    """Stop writing access lines, the last ones flushed (at stop, or turned off by a reload)."""
    lb = app.ctx.lb
    flusher = getattr(app.ctx, "access_flusher", None)
    app.ctx.access_flusher = None
    access_log, lb.access_log = lb.access_log, None
    if flusher is not None:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
    if access_log is not None:
        access_log.flush()


def answered_here(handler: Handler) -> Handler:
    """A local endpoint's handler, with the request id (returned in ``X-Request-ID``) and
    the access line the proxy's requests get in ``proxy()``.

    A decorator rather than Sanic middleware: middleware costs a signal dispatch per
    request on every route it is attached to, which doubled ``/lb-health``'s CPU per request
    (measured with bench/proxy_bench.py, 26 -> 42 µs); this costs a function call. A handler
    that raises gets the id from the error handler (``service.errors``).
    """

    @wraps(handler)
    async def answered(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        started = time.perf_counter()
        lb = request.app.ctx.lb
        request_id = begin_request(request, lb.request_ids)
        response = await handler(request, *args, **kwargs)
        response.headers[HEADER] = request_id
        if lb.access_log is not None:
            done = Answered(LOCAL_ROUTE, "", response.status, len(response.body or b""))
            lb.access_log.write(request, done, time.perf_counter() - started)
        return response

    return answered
