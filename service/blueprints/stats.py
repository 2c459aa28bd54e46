"""``GET /stats``: the load balancer's own figures (always fresh) plus every service's."""

from __future__ import annotations

import orjson
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, raw

from service.aggregate import StatsAggregator
from service.figures import load_balancer_entry

bp = Blueprint("stats")


@bp.before_server_start
async def open_aggregator(app: Sanic) -> None:
    settings = app.ctx.settings
    app.ctx.aggregator = StatsAggregator(
        settings.upstreams,
        client_for=lambda name: app.ctx.upstreams[name],
        url_for=lambda name: app.ctx.pools[name].choose().url,
        settings=settings.stats,
    )


@bp.get("/stats")
async def stats(request: Request) -> HTTPResponse:
    services = await request.app.ctx.aggregator.collect()
    entry = load_balancer_entry(request.app.ctx.metrics.snapshot())
    entry["upstreams"] = {name: pool.describe() for name, pool in request.app.ctx.pools.items()}
    document = {"load-balancer": entry}
    document.update(services)
    user_service = services.get("user_service", {})
    for key in ("database", "cache"):
        if key in user_service:
            document[key] = user_service[key]
    return raw(
        orjson.dumps(document),
        content_type="application/json",
        headers={"cache-control": "no-store"},
    )
