"""``/lb-health``: answered by the load balancer itself, never proxied, never waits on I/O."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

bp = Blueprint("health")


@bp.route("/lb-health", methods=("GET", "HEAD"))
async def lb_health(request: Request) -> HTTPResponse:
    return json({"status": "healthy"})
