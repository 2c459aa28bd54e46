"""The load balancer without the request-id middlewares of ``service.logs``, for
benchmarks only: ``sanic bench.variant_noids:app``.

Both of the app's middlewares (``assign_request_id``, ``return_request_id``) are removed
before the server starts, so no request gets an ``X-Request-ID`` and nothing is logged
per request (run it with ``LB_ACCESS_LOG=false``). ``bench/access_log_cost.py`` compares it
with the service to price the request ids; everything else is the service's.
"""

from __future__ import annotations

from service.app import app

app.request_middleware.clear()
app.response_middleware.clear()

__all__ = ["app"]
