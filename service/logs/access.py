"""One line per request (the access log), and one line per 502/504 the proxy made itself.

Called once per request where it is measured (``blueprints/proxy.py:proxy``'s ``finally``)
and, for the local endpoints, by the response middleware of ``service.logs``. Nothing here
runs when the access log is off and the request was not a proxy error.
"""

from __future__ import annotations

import logging

from sanic import Request

access_log = logging.getLogger("service.access")
error_log = logging.getLogger("service.proxy")


def log_request(
    request: Request,
    *,
    route: str,
    target: str,
    status: int,
    size: int,
    duration_s: float,
    access: bool,
    error_reason: str = "",
) -> None:
    """``error_reason`` (a proxy-made 502/504's reason) is logged at WARNING whether or not
    the access log is on; the access line only when ``access``."""
    if error_reason:
        error_log.warning(
            "%s %s -> %d from %s: %s", request.method, request.path, status,
            target or route, error_reason,
        )  # fmt: skip
    if access:
        client, method, path = request.ip, request.method, request.path
        access_log.info(
            "%s %s %d", method, path, status,
            extra={"access": {
                "client": client, "method": method, "path": path, "route": route,
                "target": target, "status": status, "bytes": size,
                "duration_ms": round(duration_s * 1000.0, 3),
            }},
        )  # fmt: skip
