"""``/lb-health``: answered by the load balancer itself, never proxied, never waits on I/O.

``/lb-health`` is the liveness probe: 200 while the process serves, draining or not.
``/lb-health?ready=1`` is the readiness probe: 503 from the start of a graceful shutdown,
so that new traffic goes elsewhere while requests in flight complete.
"""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from service.errors import sanic_error_body
from service.preformatted import PreformattedResponse
from service.logs import answered_here

bp = Blueprint("health")


# the answer of a process that serves, as bytes once (Sanic's own JSON encoding of it)
_HEALTHY = json({"status": "healthy"}).body
_JSON = [(b"content-type", b"application/json")]


@bp.route("/lb-health", methods=("GET", "HEAD"))
@answered_here
async def lb_health(request: Request) -> HTTPResponse:
    # ``request.args`` parses the query: only when there is one (probes poll this path)
    if (
        request.query_string
        and request.args.get("ready", "0") != "0"
        and request.app.ctx.lb.draining
    ):
        body = sanic_error_body(503, "draining: shutting down, send new requests elsewhere")
        return json({**body, "status": "draining"}, status=503)
    return PreformattedResponse(200, _JSON[:], body=_HEALTHY)
