"""``create_app``: the one place an application is assembled.

A factory rather than a module-level app, so that nothing is built at import time (workers
import the package too, and tests build apps with their own settings), and so that a test
can assemble an app from exactly the settings it needs.
"""

from __future__ import annotations

import itertools

from sanic import Sanic

from service import metrics_setup, pools_setup, upstreams
from service.blueprints import health, heartbeat, prometheus, proxy, stats
from service.routing import Router
from service.settings import Settings

_names = itertools.count()


def create_app(settings: Settings, name: str | None = None) -> Sanic:
    app = Sanic(name or "load-balancer", configure_logging=True)
    # Sanic's own limits where they are ours to set; the proxy enforces the body size itself.
    app.config.AUTO_EXTEND = False
    app.config.REQUEST_TIMEOUT = 60
    app.config.RESPONSE_TIMEOUT = settings.proxy.read_timeout + 30
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 15.0
    app.config.REQUEST_MAX_HEADER_SIZE = 16 * 1024
    app.config.ACCESS_LOG = False
    # Sanic's own errors (405, 400 for a malformed request, 413, 431...) as short JSON, like
    # the proxy's: {"description", "status", "message"}.
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.ctx.settings = settings
    app.ctx.router = Router(settings.routes)
    upstreams.register(app)
    metrics_setup.register(app)
    pools_setup.register(app)
    app.config.WEBSOCKET_PING_INTERVAL = None  # the heartbeat blueprint pings itself
    app.config.WEBSOCKET_MAX_SIZE = 64 * 1024
    app.blueprint(health.bp)
    app.blueprint(stats.bp)
    app.blueprint(prometheus.bp)
    app.blueprint(heartbeat.bp)
    app.blueprint(proxy.bp)  # last: its catch-all route must not shadow the local endpoints
    return app
