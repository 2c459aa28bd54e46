"""``create_app``: the one place an application is assembled.

A factory rather than a module-level app, so that nothing is built at import time (workers
import the package too, and tests build apps with their own settings), and so that a test
can assemble an app from exactly the settings it needs.

Every feature is a package with ``startup(app)`` (``service.features``): it builds its own
objects in its listeners and registers what it shows. :data:`FEATURES` is the one list of
them; adding a feature adds a line here.
"""

from __future__ import annotations

from sanic import Sanic

from service import admission, blueprints, cluster, discovery, errors, frontdoor, logs, metrics
from service import pools, reload, routes, sharedmem, stats, tls, tracing, transport
from service.context import WorkerContext
from service.frontdoor import ClientAddresses
from service.proxying import Router, response_timeout
from service.settings import Settings

# In this order their listeners run (before_server_stop's in reverse).
FEATURES = (
    sharedmem,  # the block, and this worker's row in it
    metrics,  # the metrics store on that row
    transport,  # one client per upstream
    pools,  # pools over the row, and active health checks
    routes,  # [[routes]]: each route's requests per backend, on the row
    discovery,  # with ;resolve targets: names looked up while serving, not before
    stats,  # the /stats fan-out over clients and pools
    cluster,  # with LB_CLUSTER_REDIS_URL: figures shared with other replicas
    tls,  # with LB_TLS_CERT: each worker's context, its rotation, the redirect port
    admission,  # rate limits and caps, at one gate
    errors,  # Sanic's own errors in the proxy's JSON shape
    frontdoor,  # strict heads, client limits, worker supervision, the drain
    tracing,  # W3C trace context on every proxied request; with an OTLP endpoint, spans
    blueprints,  # the local endpoints, then the proxy's catch-all route
    logs,  # the access log; request ids on the local routes (the proxy's own)
    reload,  # last: SIGHUP and LB_CONFIG_WATCH swap what the features above built
)

# which settings each feature keeps as the host started with them (``service.reload``)
RESTART_ONLY = tuple(rule for f in FEATURES if (rule := getattr(f, "RESTART_ONLY", None)))


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
        client_addresses=ClientAddresses(
            settings.admission.trusted_proxies, settings.admission.ipv6_client_prefix
        ),
        restart_only=RESTART_ONLY,
    )
    for feature in FEATURES:
        feature.startup(app)
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
