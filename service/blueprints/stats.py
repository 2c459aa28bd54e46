"""``GET /stats``: the load balancer's own figures (always fresh) plus every service's."""

from __future__ import annotations

import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw

from service.admission import admitted
from service.stats import build_report
from service.logs import answered_here

bp = Blueprint("stats")


@bp.get("/stats")
@answered_here
@admitted  # LB_RATE_LIMIT and limits with routes = ["stats"]: its route is "stats"
async def stats(request: Request) -> HTTPResponse:
    report = await build_report(request.app.ctx.lb)
    return raw(
        orjson.dumps(report.document()),
        content_type="application/json",
        headers={"cache-control": "no-store"},
    )
