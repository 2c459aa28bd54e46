"""Routes (``[[routes]]``): each route's requests per backend, counted in the shared block
(``counters``), and shown in ``/stats`` as ``load-balancer.routes`` (``report``). Where a
request goes is decided by ``service.proxying.routing``; this package counts and shows it.

``startup(app)`` reserves the counters on the block's plan when the app is built, and binds
them to the worker's router before it serves; a reload binds them to its new router
(``service.reload.apply``).
"""

from __future__ import annotations

from sanic import Sanic

from service.routes.counters import RouteCounters, RouteCountersLayout
from service.routes.report import describe

__all__ = ["RouteCounters", "RouteCountersLayout", "describe", "startup"]


def startup(app: Sanic) -> None:
    lb = app.ctx.lb
    layout = RouteCountersLayout(lb.plan, lb.settings)
    lb.show.section("routes", lambda: describe(lb.router, lb.route_counters))

    @app.before_server_start
    async def count_routes(app: Sanic) -> None:
        lb = app.ctx.lb
        lb.route_counters = RouteCounters(lb.row, layout)
        lb.route_counters.bind(lb.router.pairs)
