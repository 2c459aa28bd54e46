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

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from sanic import HTTPResponse, Request, Sanic

from service.preformatted import add_field
from service.logs.access import AccessLog, Answered, log_request
from service.logs.config import log_config
from service.logs.request_id import HEADER, RequestIds, current, is_sane
from service.settings import Settings

Handler = Callable[..., Awaitable[HTTPResponse]]

__all__ = [
    "HEADER",
    "LOCAL_ROUTE",
    "AccessLog",
    "RequestIds",
    "answered_here",
    "begin_request",
    "build_access_log",
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
    """The access log's life (its lines come from ``proxy()`` and ``answered_here``)."""

    @app.before_server_start
    async def open_access_log(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.access_log = build_access_log(lb.settings, lb.client_addresses.of)

    @app.after_server_start
    async def start_flushing(app: Sanic) -> None:
        if app.ctx.lb.access_log is not None:  # as a reload before serving left it
            app.ctx.lb.access_log.start()

    @app.after_server_stop
    async def close_access_log(app: Sanic) -> None:
        if app.ctx.lb.access_log is not None:
            app.ctx.lb.access_log.cancel()


def build_access_log(
    settings: Settings,
    client_address: Callable[[Request], str],
    previous: AccessLog | None = None,
) -> AccessLog | None:
    """The access log ``LB_ACCESS_LOG`` asks for (at start-up, or at a reload: the one
    written so far, while it stays on); None when it is off."""
    if not settings.access_log:
        return None
    if previous is not None:
        return previous
    return AccessLog(settings.log_format, client_address=client_address)


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
        add_field(response, HEADER, request_id)
        if lb.access_log is not None:
            done = Answered(LOCAL_ROUTE, "", response.status, len(response.body or b""))
            lb.access_log.write(request, done, time.perf_counter() - started)
        return response

    return answered
