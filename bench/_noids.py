"""The load balancer without generating request ids on the proxy route, for benchmarks
only: ``sanic bench._noids:app``.

``service.blueprints.proxy.begin_request`` is replaced by one that sets the constant id
``-`` (no client header read, no generation, no context variable) and ``_with_id`` by the
identity. The constant still travels in the forwarded and returned headers of streamed
answers, so the difference from the service prices making the id and keeping it for the
log lines, not the two header lines. Run it with ``LB_ACCESS_LOG=false``; everything else
is the service's.
"""

from __future__ import annotations

from sanic import Request

from service.app import app
from service.blueprints import proxy
from service.logs import RequestIds


def constant_id(request: Request, ids: RequestIds) -> str:
    request.ctx.request_id = "-"
    return "-"


proxy.begin_request = constant_id  # type: ignore[assignment]
proxy._with_id = lambda response, *_: response  # type: ignore[assignment]

__all__ = ["app"]
