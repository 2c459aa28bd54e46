"""``create_app``: the one place an application is assembled.

A factory rather than a module-level app, so that nothing is built at import time (workers
import the package too, and tests build apps with their own settings), and so that a test
can assemble an app from exactly the settings it needs.
"""

from __future__ import annotations

from sanic import Sanic

from service import admission
from service import cluster, errors, frontdoor, logs, metrics, pools, sharedmem, stats, transport
from service import discovery
from service import tls
from service import reload
from service.blueprints import health, heartbeat, proxy
from service.blueprints import metrics as metrics_endpoint
from service.blueprints import stats as stats_endpoint
from service.blueprints import status as status_page
from service.context import WorkerContext
from service.proxying import Router, response_timeout
from service.settings import Settings


def create_app(settings: Settings, name: str | None = None) -> Sanic:
    app = frontdoor.FrontDoorApp(
        name or "load-balancer",
        configure_logging=True,
        log_config=logs.log_config(settings.log_format),
    )
    _configure(app, settings)
    plan = sharedmem.Plan()
    app.ctx.lb = WorkerContext(
        settings=settings,
        router=Router(settings.routes),
        plan=plan,
        metrics_layout=metrics.reserve(plan, settings),
        pool_layout=pools.reserve(plan, settings),
        discovery_layout=discovery.reserve(plan, settings),
    )
    # Each feature registers its own listeners; before_server_start runs them in this order.
    sharedmem.startup(app)  # the block, and this worker's row in it
    metrics.startup(app)  # the metrics store on that row
    transport.startup(app)  # one client per upstream
    pools.startup(app)  # pools over the row, and active health checks
    discovery.startup(app)  # with ;resolve targets: names looked up while serving, not before
    stats.startup(app)  # the /stats fan-out over clients and pools
    cluster.startup(app)  # with LB_CLUSTER_REDIS_URL: figures shared with other replicas
    tls.startup(app)  # with LB_TLS_CERT: each worker's context, its rotation, the redirect port
    admission.startup(app)  # the real client address; rate limits and caps, at one gate
    errors.startup(app)  # Sanic's own errors in the proxy's JSON shape
    frontdoor.startup(app)  # strict heads, client limits, worker supervision, the drain
    app.blueprint(health.bp)
    app.blueprint(stats_endpoint.bp)
    app.blueprint(metrics_endpoint.bp)
    app.blueprint(heartbeat.bp)
    app.blueprint(status_page.bp)
    app.blueprint(proxy.bp)  # last: its catch-all route must not shadow the local endpoints
    logs.startup(app)  # the access log; request ids on the local routes (the proxy's own)
    reload.startup(app)  # last: SIGHUP and LB_CONFIG_WATCH swap what the features above built
    return app


def _configure(app: Sanic, settings: Settings) -> None:
    """Sanic's own limits where they are ours to set; the proxy enforces the body size."""
    app.config.AUTO_EXTEND = False
    app.config.REQUEST_TIMEOUT = 60
    app.config.RESPONSE_TIMEOUT = response_timeout(settings.proxy)
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 15.0
    app.config.REQUEST_MAX_HEADER_SIZE = 16 * 1024
    app.config.ACCESS_LOG = False
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.WEBSOCKET_PING_INTERVAL = None  # the heartbeat blueprint pings itself
    app.config.WEBSOCKET_MAX_SIZE = 64 * 1024
