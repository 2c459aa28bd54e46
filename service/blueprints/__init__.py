"""The HTTP surface: the local endpoints (health, ``/stats``, ``/metrics``, the heartbeat, the
status page) and the proxy's catch-all route.

``startup(app)`` registers them, the proxy last: its catch-all route must not shadow them.
"""

from __future__ import annotations

from sanic import Sanic

from service.blueprints import health, heartbeat, metrics, proxy, stats, status


def startup(app: Sanic) -> None:
    for module in (health, stats, metrics, heartbeat, status, proxy):
        app.blueprint(module.bp)
