"""``GET /stats``: the load balancer's own figures (always fresh) plus every service's."""

from __future__ import annotations

import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw

from service.stats import build_report

bp = Blueprint("stats")


@bp.get("/stats")
async def stats(request: Request) -> HTTPResponse:
    report = await build_report(request.app.ctx.lb)
    return raw(
        orjson.dumps(report.document()),
        content_type="application/json",
        headers={"cache-control": "no-store"},
    )
